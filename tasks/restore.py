"""Restore tasks, the one path of the restore flow, an upgrade's rollback and the restore drill:
pick → fetch (download, check, decrypt) → restore a copy → [neutralize] → filestore copy → swap in → (health
gate, by the caller) → drop the replaced copy, or swap back."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from prefect import task

from odoo_stack_ops import pgtls
from odoo_stack_ops.backup import layout, restore
from odoo_stack_ops.backup.database import connect, database_exists, drop_database, read_facts
from odoo_stack_ops.backup.manifest import Manifest
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.backup.verify import compare_facts
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError, VerificationFailed
from odoo_stack_ops.pools import GIVE_UP_S, in_background
from odoo_stack_ops.upgrade import steps
from tasks.backup import dump_executor
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, logger


@task(name="pick-backup", **TRANSIENT_RETRIES)
def pick_backup(cfg: StackConfig, database: str, on_date: date | None = None,
                manifest_key: str | None = None) -> Manifest:
    """The newest verified backup of `database` (of a local date), or the one named."""
    bucket = Bucket.open(cfg.spaces)
    refs = restore.list_manifests(bucket, database)
    if manifest_key:
        ref = restore.pick_backup(refs, {}, database=database, key=manifest_key)
        return restore.load_manifest(bucket, ref.key)
    manifests = {r.key: restore.load_manifest(bucket, r.key) for r in refs}
    ref = restore.pick_backup(refs, manifests, database=database, on_date=on_date, tz=cfg.backup.timezone)
    return manifests[ref.key]


@task(name="fetch-dump", **TRANSIENT_RETRIES)
def fetch_dump(cfg: StackConfig, manifest: Manifest, work: Path, plain_copy: Path | None = None) -> Path:
    """The checked plaintext dump as a local file: from tonight's plaintext copy when given (no key needed),
    else downloaded from Spaces, hash-checked and decrypted with the configured identity."""
    dest = work / "dump.custom"
    if plain_copy is not None:
        chunks = restore.local_dump_chunks(plain_copy, manifest.dump)
    else:
        chunks = restore.dump_chunks(Bucket.open(cfg.spaces), manifest.dump,
                                     restore.decryptor_for(manifest, cfg.backup.age_identity))
    size = restore.fetch_dump(chunks, dest)
    logger().info("dump of %s/%s checked%s: %.1f MiB", manifest.database, manifest.stamp,
                  " (local plaintext copy)" if plain_copy else "", size / (1 << 20))
    return dest


@task(name="restore-database-copy", **NO_RETRIES)
def restore_database_copy(cfg: StackConfig, target: str, st: str, dump_file: Path, jobs: int = 2) -> str:
    """pg_restore into `<target>__restoring_<stamp>`; the live database is not touched. Returns the copy's name."""
    with Connections(cfg) as conns:
        name, seconds = restore.restore_copy(dump_executor(cfg, conns), cfg.database, target, st, dump_file, jobs=jobs)
    logger().info("restored into %s in %.1f s", name, seconds)
    return name


@task(name="check-filestore-space", **TRANSIENT_RETRIES)
def check_filestore_space(cfg: StackConfig, manifest: Manifest) -> str:
    """Refuse, before anything is written, a filestore restore that would fill Odoo's data volume."""
    with Connections(cfg) as conns:
        available = restore.free_bytes(conns.container("odoo-core"), cfg.odoo.data_dir)
    if available is None:
        logger().warning("could not read the free space of %s in odoo-core (df); restoring without that check",
                         cfg.odoo.data_dir)
        return "unknown"
    problem = restore.space_problem(manifest.filestore.bytes, available, cfg.restore.min_free_after_mb << 20)
    if problem:
        raise OpsError(f"{problem}. Nothing was changed. Free space there (`docker system df`, old "
                       "`<database>__before_`/`__failed_` copies), grow the volume, or restore the database alone "
                       "(restore_filestore=false)")
    return f"{available >> 20} MiB free for {manifest.filestore.bytes >> 20} MiB"


@task(name="restore-filestore-copy", **NO_RETRIES)
def restore_filestore_copy(cfg: StackConfig, manifest: Manifest, new: str) -> int:
    """Every filestore object (hash-checked, decrypted) into the filestore directory of database `new`."""
    bucket = Bucket.open(cfg.spaces)
    files = restore.filestore_files(bucket, manifest)
    decrypt = restore.decryptor_for(manifest, cfg.backup.age_identity)
    with Connections(cfg) as conns:
        container = conns.container("odoo-core")
        owner = container.run(["stat", "-c", "%u %g", cfg.odoo.data_dir]).stdout_text.split()
        root = restore.restore_filestore(container, cfg.odoo.data_dir, new,
                                         restore.object_members(bucket, files, decrypt, manifest.object_tag),
                                         owner=(int(owner[0]), int(owner[1])))
    logger().info("restored %d filestore files into %s", len(files), root)
    return len(files)


@task(name="neutralize", **NO_RETRIES)
def neutralize(cfg: StackConfig, name: str) -> str:
    """Odoo's own `odoo neutralize` inside odoo-core (every installed module's rules) when the image has it, the
    SQL rules otherwise; then checks the database says it is neutralized. Returns how it was done."""
    ensure_identifier(name, "database")
    with Connections(cfg) as conns:
        container = pgtls.CAInContainer(conns.container("odoo-core"))  # odoo's libpq verifies the server too
        has_command = container.run(["odoo", "neutralize", "--help"], check=False, timeout=60).ok
        if has_command:
            container.run(["odoo", "neutralize", "-c", cfg.odoo.config_file, "-d", name],
                          env=cfg.database.libpq_env(name), timeout=1800,
                          hint="odoo neutralize failed: the copy is not used; see its log lines above")
            how = "odoo neutralize"
        else:
            statements = restore.neutralize(cfg.database, name)
            how = f"SQL rules ({len(statements)} statements; this odoo has no `neutralize` command)"
    with connect(cfg.database, name) as conn:
        # a copy must not pose as production to Odoo's services (IAP, push notifications): its own identity
        conn.execute("UPDATE ir_config_parameter SET value = gen_random_uuid()::text WHERE key = 'database.uuid'")
        row = conn.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'").fetchone()
    if not row or row[0] != "True":
        raise VerificationFailed(f"{name} does not say it is neutralized after {how}; it is not put in service")
    logger().info("neutralized %s with %s", name, how)
    return how


@dataclass(frozen=True)
class Swapped:
    """What swap_in did: the restored copy is `target`; the replaced one, if any, is `before`."""

    target: str
    before: str | None
    stamp: str
    filestore: bool


@task(name="swap-in", **NO_RETRIES)
def swap_in(cfg: StackConfig, target: str, new: str, st: str, filestore: bool) -> Swapped:
    """Rename the restored copy (and its filestore) to `target`; the old ones become `<target>__before_<stamp>`."""
    before = restore.copy_name(target, "before", st)
    if filestore:
        with Connections(cfg) as conns:
            restore.swap_filestore(conns.container("odoo-core"), cfg.odoo.data_dir, new, target, before)
    try:
        replaced = restore.swap_in(cfg.database, target, new, st)
    except BaseException:
        if filestore:
            with Connections(cfg) as conns:
                restore.swap_back_filestore(conns.container("odoo-core"), cfg.odoo.data_dir, target, before, new)
        raise
    logger().info("%s is now the restored copy%s", target, f"; the previous one is kept as {replaced}" if replaced
                  else "")
    return Swapped(target, replaced, st, filestore)


@task(name="swap-back", **NO_RETRIES)
def swap_back(cfg: StackConfig, swapped: Swapped) -> str:
    """Undo swap_in: the replaced database (and filestore) is the target again; the restored ones are set aside
    as `<target>__failed_<stamp>`, which the next restore of the target drops (once keep_previous_h old)."""
    if swapped.before is None:
        raise OpsError(f"{swapped.target} had no previous copy to go back to")
    failed = restore.swap_back(cfg.database, swapped.target, swapped.before, swapped.stamp)
    if swapped.filestore:
        with Connections(cfg) as conns:
            restore.swap_back_filestore(conns.container("odoo-core"), cfg.odoo.data_dir, swapped.target,
                                        swapped.before, failed)
    logger().warning("swapped back: %s is the previous database again; the restored one is kept as %s until the "
                     "next restore of %s", swapped.target, failed, swapped.target)
    return failed


@task(name="drop-copy", **NO_RETRIES)
def drop_copy(cfg: StackConfig, name: str, filestore: bool) -> None:
    """Drop a restore's leftover copy: its filestore directory first, so that a copy half dropped is a database
    the next sweep still finds."""
    if filestore:
        with Connections(cfg) as conns:
            restore.drop_filestore(conns.container("odoo-core"), cfg.odoo.data_dir, name)
    drop_database(cfg.database, name)
    logger().info("dropped %s", name)


def settle_replaced(cfg: StackConfig, swapped: Swapped) -> str:
    """After the gate passed: the copy the restore replaced is confirmed (a later writer may drop it once older
    than keep_previous_h) and, with keep_previous_h 0, dropped now. Says what became of it."""
    if not swapped.before:
        return "none (new database)"
    restore.confirm_copy(cfg.database, swapped.before)
    if cfg.backup.keep_previous_h == 0:
        drop_copy(cfg, swapped.before, swapped.filestore)
        return f"{swapped.before} (dropped after the gate passed)"
    return f"{swapped.before} (kept {cfg.backup.keep_previous_h:g} h)"


@task(name="restore-gate", **NO_RETRIES)
def gate(cfg: StackConfig, manifest: Manifest, target: str, health_timeout_s: float) -> str:
    """The restored database holds what the manifest recorded; for production, odoo-core restarts healthy."""
    with connect(cfg.database, target) as conn, conn.cursor() as cur:
        problems = compare_facts(manifest, read_facts(cur, conn.info.server_version).as_dict())
    if problems:
        raise VerificationFailed(f"restored {target} differs from the backup: {'; '.join(problems[:5])}")
    if target != cfg.database.name:
        return "tables, rows and modules match the manifest"
    return f"matches the manifest; odoo-core restarted, healthy after {_restart_odoo(cfg, health_timeout_s):.0f} s"


def _restart_odoo(cfg: StackConfig, health_timeout_s: float) -> float:
    with Connections(cfg) as conns:
        steps.restart_service(conns, "odoo-core")
    return steps.wait_healthy(cfg.odoo.health_url, health_timeout_s)


@task(name="restart-odoo-on-the-previous-database", **NO_RETRIES)
def restart_on_previous(cfg: StackConfig, health_timeout_s: float) -> str:
    """After a production swap back: odoo-core loaded the restored database in the gate (its registry, its
    modules), so it is restarted on the one put back. Says how that went; never raises."""
    try:
        return f"odoo-core restarted on it, healthy after {_restart_odoo(cfg, health_timeout_s):.0f} s"
    except Exception as exc:  # noqa: BLE001 - the gate's failure is the error to raise; this one is told with it
        logger().error("odoo-core did not come back healthy on the previous database: %s", exc)
        return (f"but odoo-core did NOT come back healthy after its restart ({exc}): check its log "
                f"(docker logs of odoo-core) and restart it")


@task(name="odoo-zip", **NO_RETRIES)
def write_zip(cfg: StackConfig, manifest: Manifest) -> str:
    """A zip Odoo's database manager restores, written under restore.export_dir (never another path)."""
    export_dir = Path(cfg.restore.export_dir).expanduser()
    export_dir.mkdir(parents=True, exist_ok=True)
    # the name comes from the manifest, which whoever can write the bucket wrote: checked before it is a path
    layout.parse_stamp(manifest.stamp)
    dest = export_dir / f"{ensure_identifier(manifest.database, 'database')}-{manifest.stamp}.zip"
    bucket = Bucket.open(cfg.spaces)
    work = restore.scratch_dir()
    try:
        dump_file = fetch_dump(cfg, manifest, work)
        files = restore.filestore_files(bucket, manifest)
        out = restore.write_odoo_zip(dest, manifest, dump_file, restore.object_members(
            bucket, files, restore.decryptor_for(manifest, cfg.backup.age_identity), manifest.object_tag))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger().info("wrote Odoo database zip %s", out)
    return str(out)


def restore_as(cfg: StackConfig, manifest: Manifest, target: str, st: str, *, overwrite: bool, jobs: int = 2,
               filestore: bool = True, neutralize_first: bool = False, plain_copy: Path | None = None) -> Swapped:
    """The whole restore of one backup under the name `target`, never destroying first: every step works on
    new names and only the last one renames. A failure at any step drops the new copy and leaves `target` as it
    was. The caller runs its health gate, then drop_copy(before) or swap_back."""
    ensure_identifier(target, "target database")
    if not overwrite and database_exists(cfg.database, target):
        raise OpsError(f"database {target} already exists; pass overwrite=True to replace it (its current copy is "
                       f"kept as {target}__before_<stamp> until the restore is confirmed)")
    stale = restore.drop_stale_copies(cfg.database, target, cfg.backup.keep_previous_h)
    if stale:
        logger().warning("dropped copies earlier restores of %s left behind: %s", target, stale)
    if filestore:  # the dropped copies' directories, and those of restores killed before their database existed
        with Connections(cfg) as conns:
            dirs = restore.drop_stale_filestores(conns.container("odoo-core"), cfg.odoo.data_dir, cfg.database,
                                                 target, cfg.backup.keep_previous_h, stale)
        if dirs:
            logger().warning("dropped filestore directories earlier restores of %s left behind: %s", target, dirs)
        check_filestore_space(cfg, manifest)  # after the sweep, which may have freed some
    work = restore.scratch_dir()
    copy = restore.copy_name(target, "restoring", st)
    # the filestore unpacks into the copy's directory while the dump downloads and restores: one waits on the
    # network and tar, the other on pg_restore
    unpacking = in_background(restore_filestore_copy, cfg, manifest, copy) if filestore else None
    try:
        dump_file = fetch_dump(cfg, manifest, work, plain_copy)
        restore_database_copy(cfg, target, st, dump_file, jobs)
        if neutralize_first:
            neutralize(cfg, copy)
        if unpacking is not None:
            unpacking.result()
        return swap_in(cfg, target, copy, st, filestore)
    except BaseException as exc:
        if unpacking is not None:  # a cancel does not wait on a fetch hung on a dead connection: the run must end
            cf.wait([unpacking], None if isinstance(exc, Exception) else GIVE_UP_S)  # before Prefect's SIGKILL
        untouched = "" if isinstance(exc, restore.NotPutBack) else f"{target} is untouched and "
        logger().error("restore of %s into %s failed; %sthe partial copy %s is dropped", manifest.stamp, target,
                       untouched, copy)
        try:
            drop_copy(cfg, copy, filestore)
        except Exception as exc:  # noqa: BLE001 - the original failure is the one to show
            logger().warning("could not drop the partial copy %s: %s", copy, exc)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
