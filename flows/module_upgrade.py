"""Flow `module-upgrade` (on demand): the seed's Module Deployment, made safe.

Lock → deploy code → plan (names, dependencies, changed addons; dry_run stops here) → pre-upgrade backup
(the rollback point) → odoo -i/-u --stop-after-init → module states → restart → health gate. Any failure
after the backup restores it, resets stuck module states, restarts and fails the run saying what happened.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.concurrency.sync import concurrency
from pydantic import BaseModel, Field

from flows.backup import backup_one
from odoo_stack_ops.backup import layout, spaces
from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.notify import notify
from odoo_stack_ops.upgrade import plan as pl
from odoo_stack_ops.upgrade import steps
from tasks.backup import dump_executor
from tasks.common import logger, publish_markdown


class UpgradeRequest(BaseModel):
    """What to deploy; the Prefect UI renders this as a form."""

    database: str = Field("odoo_core", description="Database to upgrade")
    install: list[str] = Field(default_factory=list, description="Modules to install (-i)")
    upgrade: list[str] = Field(default_factory=list, description="Modules to upgrade (-u)")
    changed: bool = Field(False, description="Also upgrade every installed addon whose files changed since the last success")
    addons_ref: str | None = Field(None, description="Git ref to check out in ./addons/* on the droplet first")
    dry_run: bool = Field(False, description="Plan only: show what would run, change nothing")
    upgrade_timeout_s: float = Field(1800, description="Give up on odoo after this long (hung upgrade)")
    health_timeout_s: float = Field(120, description="Wait this long for /web/health after the restart")
    lock_wait_s: float = Field(600, description="Wait this long for another upgrade to finish")


def rollback(cfg: StackConfig, conns: Connections, database: str, manifest: dict[str, Any], timeout_s: float) -> str:
    """Restore the pre-upgrade backup, reset stuck states, restart, confirm health."""
    work = rs.scratch_dir()
    try:
        dump = work / "rollback.custom"
        rs.download_dump(spaces.client(cfg.spaces), cfg.spaces.bucket, manifest["dump"], dump)
        rs.restore_database(dump_executor(cfg, conns), cfg.database, database, dump, overwrite=True)
    finally:
        import shutil  # noqa: PLC0415

        shutil.rmtree(work, ignore_errors=True)
    reset = steps.reset_module_states(cfg.database, database)
    conns.docker().containers.get(conns.container("odoo-core").container.id).restart(timeout=30)  # type: ignore[attr-defined]
    took = steps.wait_healthy(cfg.odoo.health_url, timeout_s)
    return f"restored {manifest['stamp']}, reset {reset} module state(s), healthy after {took:.0f} s"


@flow(name="module-upgrade", description="Deploy and install/upgrade Odoo modules with backup, health gate, rollback")
def module_upgrade(request: UpgradeRequest, stack_file: str | None = None) -> dict[str, Any]:
    log = logger()
    cfg = load_config(stack_file)
    db = ensure_identifier(request.database, "database")
    if db not in cfg.database.databases:
        raise OpsError(f"{db} is not one of database.databases {cfg.database.databases}")
    pl.check_modules(request.install + request.upgrade)
    outcome: dict[str, Any] = {"database": db, "dry_run": request.dry_run}
    started = time.monotonic()
    with concurrency("odoo-db-writes", occupy=1, strict=True), \
            steps.advisory_lock(cfg.database, db, request.lock_wait_s), Connections(cfg) as conns:
        if request.addons_ref and not request.dry_run:
            outcome["deployed"] = steps.deploy_code(conns.host(), cfg.odoo.compose_dir, request.addons_ref)
        container = conns.container("odoo-core")
        states = steps.module_states(cfg.database, db)
        addons = steps.list_addons(container, cfg.odoo.addons_paths)
        wanted = set(request.install) | set(request.upgrade) | (set(addons) if request.changed else set())
        manifests = steps.find_manifests(container, cfg.odoo.addons_paths, sorted(wanted))
        for m in list(manifests.values()):
            manifests.update(steps.find_manifests(container, cfg.odoo.addons_paths,
                                                  [d for d in m.get("depends", []) if d not in manifests]))
        hashes = steps.addon_hashes(container, cfg.odoo.addons_paths,
                                    [a for a in addons if states.get(a) == "installed" or a in wanted])
        plan = pl.make_plan(install=request.install, upgrade=request.upgrade, changed=request.changed,
                            manifests=manifests, states=states, hashes=hashes, stored=steps.stored_hashes(cfg.database, db))
        outcome["plan"] = {"install": plan.install, "upgrade": plan.upgrade, "unchanged": plan.unchanged,
                           "problems": plan.problems}
        log.info("plan for %s: install %s, upgrade %s, problems %s", db, plan.install, plan.upgrade, plan.problems)
        if plan.problems:
            raise OpsError(f"refused before any change: {'; '.join(plan.problems)}")
        if request.dry_run or plan.nothing_to_do:
            outcome["result"] = "dry run: nothing changed" if request.dry_run else "nothing to do"
            return _report(cfg, outcome, started)
        st = layout.stamp(datetime.now(UTC))
        rollback_point = backup_one(cfg, db, st, run_verify=False)
        outcome["rollback_point"] = rollback_point["stamp"]
        try:
            errors = steps.run_odoo(container, cfg, db, plan.install, plan.upgrade, request.upgrade_timeout_s,
                                    lambda line: log.info("odoo: %s", line))
            if errors:
                raise OpsError(f"odoo logged {len(errors)} error(s): {errors[0]}")
            bad = steps.check_states(cfg.database, db, plan.install + plan.upgrade)
            if bad:
                raise OpsError(f"modules not installed after odoo ran: {bad}")
            conns.docker().containers.get(container.container.id).restart(timeout=30)  # type: ignore[attr-defined]
            outcome["healthy_after_s"] = steps.wait_healthy(cfg.odoo.health_url, request.health_timeout_s)
        except Exception as exc:
            log.error("upgrade failed (%s): rolling back to %s", exc, rollback_point["stamp"])
            outcome["result"] = f"FAILED and rolled back: {exc}"
            try:
                outcome["rollback"] = rollback(cfg, conns, db, rollback_point, request.health_timeout_s)
            except Exception as again:
                outcome["rollback"] = f"ROLLBACK FAILED: {again}"
                _report(cfg, outcome, started, failed=True)
                raise OpsError(f"upgrade failed ({exc}) AND rollback failed ({again}): restore backup "
                               f"{rollback_point['stamp']} by hand with the restore flow") from again
            _report(cfg, outcome, started, failed=True)
            raise OpsError(f"upgrade of {db} failed and was rolled back to {rollback_point['stamp']}: {exc}") from exc
        steps.store_hashes(cfg.database, db, plan.hashes)
        outcome["result"] = "upgraded"
    return _report(cfg, outcome, started)


def _report(cfg: StackConfig, outcome: dict[str, Any], started: float, failed: bool = False) -> dict[str, Any]:
    outcome["seconds"] = round(time.monotonic() - started, 1)
    md = "# Module upgrade\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in outcome.items())
    publish_markdown("module-upgrade", md, f"module upgrade of {outcome['database']}")
    notify(cfg.mattermost, f"Module upgrade of {outcome['database']} on {cfg.name}: {outcome.get('result')}",
           md, level="danger" if failed else "good")
    return outcome
