"""Flow `restore` (on demand): bring a published backup back into a database and a filestore.

Never destroys first: the backup is restored under a new name and swapped in only once complete; the replaced
database is kept as `<target>__before_<stamp>` until the restored one has passed its gate (for production:
odoo-core restarted and `/web/health` 200), then dropped (or kept `backup.keep_previous_h` hours); a gate that
fails, or a cancel while it runs, swaps the previous one back. `staging=True`
is the staging refresh (production backup → odoo_dev): the copy is neutralized BEFORE it gets a name Odoo
serves. `odoo_zip=True` writes a zip Odoo's database manager can restore under `restore.export_dir`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from prefect import flow

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup.manifest import Manifest
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.locks import stack_writer
from odoo_stack_ops.signals import STOPS, finishing, stopped_how
from tasks.common import logger, publish_markdown
from tasks.restore import (
    Swapped,
    gate,
    pick_backup,
    restart_on_previous,
    restore_as,
    settle_replaced,
    swap_back,
    write_zip,
)


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
    odoo_zip: bool = False,
    jobs: int = 2,
    health_timeout_s: float = 180,
    stack: str | None = None,
) -> dict[str, Any]:
    """Restore `database`'s backup (newest verified, or of `on_date`, or `manifest_key`) into `target_database`."""
    cfg = load_config(stack_file, stack=stack)
    target = target_database or (cfg.restore.staging_database if staging else None)
    if staging and target == cfg.database.name:
        raise OpsError(f"a staging refresh must not target the production database {cfg.database.name}")
    if not target and not odoo_zip:
        raise OpsError("nothing to do: give target_database, staging=True or odoo_zip=True")
    manifest = pick_backup(cfg, database, on_date, manifest_key)
    outcome: dict[str, Any] = {"backup": manifest.stamp, "source": database}
    if not manifest.verified:
        logger().warning("restoring an UNVERIFIED backup %s: %s", manifest.stamp, manifest.verification.error)
    if target:
        outcome |= _restore_into(cfg, manifest, target, overwrite=overwrite or staging, staging=staging,
                                 filestore=restore_filestore, jobs=jobs, health_timeout_s=health_timeout_s)
    if odoo_zip:
        outcome["odoo_zip"] = write_zip(cfg, manifest)
    publish_markdown("restore", "# Restore\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in outcome.items()),
                     f"restore of {database} {manifest.stamp}")
    return outcome


def _restore_into(cfg: StackConfig, manifest: Manifest, target: str, *, overwrite: bool, staging: bool,
                  filestore: bool, jobs: int, health_timeout_s: float) -> dict[str, Any]:
    st = layout.stamp(datetime.now(UTC))
    with stack_writer(cfg, cfg.backup.lock_wait_s, f"the restore into {target}"):
        swapped: Swapped = restore_as(cfg, manifest, target, st, overwrite=overwrite, jobs=jobs, filestore=filestore,
                                      neutralize_first=staging)
        outcome: dict[str, Any] = {"database": target, "replaced_copy": swapped.before or "none (new database)"}
        try:
            outcome["gate"] = gate(cfg, manifest, target, health_timeout_s)
        except (Exception, *STOPS) as exc:  # a cancel or the worker's stop too: an unconfirmed restore goes back
            if swapped.before is None:
                raise
            cancelled = isinstance(exc, STOPS)
            if cancelled:
                logger().error("restore into %s %s in its gate: swapping the previous database back", target,
                               stopped_how(exc))
            with finishing():
                failed = swap_back(cfg, swapped)
                odoo = f" ({restart_on_previous(cfg, health_timeout_s)})" if target == cfg.database.name else ""
            if cancelled:  # the run ends cancelled (or stopped), as asked
                logger().error("the previous %s is back in place%s; the restored copy is kept as %s until the next "
                               "restore of %s", target, odoo, failed, target)
                raise
            raise OpsError(f"the restored {target} failed its gate ({exc}); the previous database is back in "
                           f"place{odoo}, the restored copy is kept as {failed} for a look until the next restore "
                           f"of {target}") from exc
        outcome["replaced_copy"] = settle_replaced(cfg, swapped)
    return outcome
