"""Flow `module-upgrade` (on demand): the seed's Module Deployment, made safe.

Lock → plan against `addons_ref` unpacked beside the served checkout (names, dependencies, changed addons;
a refused plan or dry_run changes nothing) → droplet snapshot (digitalocean.snapshot_before) → stop odoo-core
(nginx answers with its error page; commands run in a stand-by container on the same volumes) → pre-upgrade
backup (the rollback point, whose plaintext copy stays on the worker) → record each addons repository's commit → deploy `addons_ref` → odoo -i/-u --stop-after-init →
module states → start → health gate. Any failure after the stop: the previous commits are checked out again, the pre-upgrade
database is restored under a new name and swapped in, odoo-core started, health confirmed, and the run fails
saying what happened. Works with encrypted backups without the private key (the plaintext copy is used).
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.backup import backup_one
from odoo_stack_ops import history
from odoo_stack_ops.backup import layout, restore, spools
from odoo_stack_ops.backup.manifest import Manifest
from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.command import ensure_identifier
from odoo_stack_ops.config import StackConfig, load_config
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.locks import stack_writer
from odoo_stack_ops.notify import alerted, notify
from odoo_stack_ops.signals import STOPS, finishing, stopped_how
from odoo_stack_ops.upgrade import plan as pl
from odoo_stack_ops.upgrade import steps
from tasks.backup import publish, verify
from tasks.common import logger, publish_markdown
from tasks.digitalocean import snapshot_before
from tasks.restore import pick_backup, restore_as, settle_replaced
from tasks.upgrade import (
    deploy_code,
    end_stale_maintenance,
    interrupted_upgrade,
    mark_changing,
    plan_upgrade,
    put_code_back,
    record_code,
    reset_module_states,
    start_odoo,
    stop_odoo,
    store_hashes,
    upgrade_modules,
)


class UpgradeRequest(BaseModel):
    """What to deploy; the Prefect UI renders this as a form."""

    database: str = Field("odoo_core", description="Database to upgrade")
    install: list[str] = Field(default_factory=list, description="Modules to install (-i)")
    upgrade: list[str] = Field(default_factory=list, description="Modules to upgrade (-u)")
    changed: bool = Field(False, description="Also upgrade every installed addon whose files changed since the last success")
    addons_ref: str | None = Field(None, description="Git ref to check out in ./addons/* on the droplet first")
    dry_run: bool = Field(False, description="Plan only: show what would run, change nothing (an upgrade found "
                          "interrupted mid-change is still rolled back first)")
    upgrade_timeout_s: float = Field(1800, description="Give up on odoo after this long (hung upgrade)")
    health_timeout_s: float = Field(120, description="Wait this long for /web/health after the restart")
    lock_wait_s: float = Field(600, description="Wait this long for another upgrade to finish")


def verify_point(cfg: StackConfig, point: Manifest, plain_copy: Path) -> str:
    """With Odoo back up, the pre-upgrade backup is restore-verified like a nightly one (from its plaintext copy,
    no key needed) and its manifest re-published with the verdict; a failed check is reported, not raised: the
    upgrade itself succeeded."""
    try:
        files = restore.filestore_files(Bucket.open(cfg.spaces), point)
        verification = verify(cfg, point, files, plain_copy)
        publish(cfg, point.with_verification(verification))
    except Exception as exc:  # noqa: BLE001 - a Spaces or database hiccup here must not undo a good upgrade
        logger().warning("the rollback point %s could not be verified: %s: %s", point.stamp, type(exc).__name__, exc)
        return f"NO: could not verify: {type(exc).__name__}: {exc}"
    return "yes" if verification.ok else f"NO: {verification.error}"


def rollback(cfg: StackConfig, conns: Connections, database: str, point: Manifest, plain_copy: Path | None,
             commits: dict[str, str], timeout_s: float) -> str:
    """Code back to the recorded commits, the pre-upgrade database restored and swapped in, odoo-core started,
    health confirmed."""
    notes = []
    if not steps.in_maintenance(conns, "odoo-core"):  # it failed after odoo-core started on the new code
        stop_odoo(conns)
        mark_changing(conns, database, point.stamp, commits)  # a kill from here is still rolled back next run
        notes.append("odoo-core stopped (it ran the new code)")
    if commits:
        notes.append("code back at " + ", ".join(put_code_back(conns, commits)))
    swapped = restore_as(cfg, point, database, layout.stamp(datetime.now(UTC)), overwrite=True, filestore=False,
                         plain_copy=plain_copy)
    reset = reset_module_states(cfg, database)
    took = start_odoo(cfg, conns, timeout_s)
    replaced = settle_replaced(cfg, swapped)
    notes.append(f"database restored from {point.stamp} and swapped in, reset {reset} module state(s), healthy "
                 f"after {took:.0f} s; the failed database: {replaced}")
    return "; ".join(notes)


def _roll_back_interrupted(cfg: StackConfig, conns: Connections, mark: dict[str, Any], timeout_s: float) -> str:
    """An upgrade killed or cancelled while it changed the stack left odoo-core stopped, its stand-by marked: its
    database may be half-upgraded and its code checked out, so odoo-core is not simply started again. Its
    rollback runs now (the backup it took while Odoo was already stopped: nothing users wrote is lost); when
    that fails too, the error says what to do by hand."""
    db, stamp, commits = mark["database"], mark["rollback_point"], mark.get("commits") or {}
    logger().warning("an upgrade of %s was interrupted while it changed the stack (stand-by %s): rolling it back "
                     "to its backup %s", db, mark["standby"], stamp)
    # the killed run's plaintext copy of that backup, if it ran on this worker: no private key needed (hash-checked)
    plain = spools.orphan_file("odoo-dump-", f"{db}-{stamp}.dump.zst")
    try:
        point = pick_backup(cfg, db, manifest_key=stamp)
        done = f"of {db}, rolled back: " + rollback(cfg, conns, db, point, plain, commits, timeout_s)
        if plain is not None:
            shutil.rmtree(plain.parent, ignore_errors=True)
        return done
    except Exception as exc:
        code = f", make sure the addons are at {commits} (the rollback checks them out first)" if commits else ""
        raise OpsError(f"an upgrade of {db} was interrupted while it changed the stack, and rolling it back failed "
                       f"({exc}); odoo-core stays stopped (it may hold a half-upgraded database). By hand: restore "
                       f"backup {stamp} of {db} over {db} with the restore flow (overwrite=True; an encrypted backup "
                       f"needs backup.age_identity there){code}, then remove "
                       f"the stand-by container {mark['standby']} and start odoo-core") from exc


@flow(name="module-upgrade", description="Deploy and install/upgrade Odoo modules with backup, health gate, rollback")
def module_upgrade(request: UpgradeRequest, stack_file: str | None = None,
                   stack: str | None = None) -> dict[str, Any]:
    log = logger()
    cfg = load_config(stack_file, stack=stack)
    db = ensure_identifier(request.database, "database")
    if db not in cfg.database.databases:
        raise OpsError(f"{db} is not one of database.databases {cfg.database.databases}")
    pl.check_modules(request.install + request.upgrade)
    outcome: dict[str, Any] = {"database": db, "dry_run": request.dry_run}
    started = time.monotonic()
    with stack_writer(cfg, request.lock_wait_s, f"the module upgrade of {db}"), Connections(cfg) as conns:
        left = interrupted_upgrade(conns)
        if left:
            outcome["interrupted_upgrade"] = _roll_back_interrupted(cfg, conns, left, request.health_timeout_s)
        end_stale_maintenance(conns)
        plan = plan_upgrade(cfg, conns, db, install=request.install, upgrade=request.upgrade,
                            changed=request.changed, addons_ref=request.addons_ref)
        outcome["plan"] = {"install": plan.install, "upgrade": plan.upgrade, "unchanged": plan.unchanged,
                           "problems": plan.problems}
        if plan.problems:
            raise OpsError(f"refused before any change: {'; '.join(plan.problems)}")
        if request.dry_run or plan.nothing_to_do:
            outcome["result"] = "dry run: nothing changed" if request.dry_run else "nothing to do"
            return _report(cfg, outcome, started)
        if cfg.digitalocean.snapshot_before:  # before anything changes; a refused token stops the run here
            outcome["droplet_snapshot"] = snapshot_before(cfg, f"module-upgrade-{db}")
        down_at = time.monotonic()
        stop_odoo(conns)
        try:
            point, plain = backup_one(cfg, db, layout.stamp(datetime.now(UTC)), run_verify=False,
                                      keep_plain_copy=True)
            outcome["rollback_point"] = point.stamp
        except (Exception, *STOPS) as exc:  # a cancel or the worker's stop too: odoo-core must not stay stopped
            with finishing():
                start_odoo(cfg, conns, request.health_timeout_s)
            if isinstance(exc, STOPS):  # the run ends cancelled (or stopped), as asked
                log.error("upgrade %s during its backup: nothing was upgraded, odoo-core is started again",
                          stopped_how(exc))
                raise
            raise OpsError(f"the pre-upgrade backup failed ({exc}); nothing was upgraded, odoo-core is started "
                           "again") from exc
        commits: dict[str, str] = {}
        try:
            if request.addons_ref:
                commits = record_code(cfg, conns)
                outcome["previous_commits"] = {r.rstrip("/"): c[:12] for r, c in commits.items()}
            # from here a killed or cancelled run leaves this mark in the stand-by: the next run rolls it back
            mark_changing(conns, db, point.stamp, commits)
            if request.addons_ref:
                deploy_code(cfg, conns, request.addons_ref)
                outcome["deployed"] = request.addons_ref
            upgrade_modules(cfg, conns, db, plan, request.upgrade_timeout_s)
            outcome["healthy_after_s"] = start_odoo(cfg, conns, request.health_timeout_s)
            outcome["downtime_s"] = round(time.monotonic() - down_at, 1)
        except (Exception, *STOPS) as exc:  # a cancel or the worker's stop too: odoo-core must not stay stopped
            cancelled = isinstance(exc, STOPS)
            why = stopped_how(exc) if cancelled else f"failed ({exc})"
            log.error("upgrade %s: rolling back to %s", why, point.stamp)
            outcome["result"] = f"{why.upper()} and rolled back" if cancelled else f"FAILED and rolled back: {exc}"
            with finishing():
                try:
                    outcome["rollback"] = rollback(cfg, conns, db, point, plain, commits, request.health_timeout_s)
                except Exception as again:
                    outcome["rollback"] = f"ROLLBACK FAILED: {again}"
                    outcome["downtime_s"] = round(time.monotonic() - down_at, 1)
                    sent = _post(cfg, outcome, started, failed=True)
                    raise OpsError(alerted(f"upgrade {why} AND rollback failed ({again}): odoo-core is left "
                                           f"stopped; restore backup {point.stamp} with the restore flow "
                                           "(overwrite=True), then start odoo-core", sent)) from again
                outcome["downtime_s"] = round(time.monotonic() - down_at, 1)
                sent = _post(cfg, outcome, started, failed=True)
            if cancelled:  # the run ends Cancelled, as asked; the rollback is in its artifact and post
                raise
            raise OpsError(alerted(f"upgrade of {db} failed and was rolled back to {point.stamp}: {exc}", sent)) from exc
        else:  # the upgrade stands: what happens to its rollback point is reported, never undoes it
            outcome["rollback_point_verified"] = verify_point(cfg, point, plain)
        finally:
            if plain is not None:
                shutil.rmtree(plain.parent, ignore_errors=True)
        store_hashes(cfg, db, plan.hashes)
        outcome["result"] = "upgraded"
    return _report(cfg, outcome, started)


def _report(cfg: StackConfig, outcome: dict[str, Any], started: float) -> dict[str, Any]:
    _post(cfg, outcome, started)
    return outcome


def _post(cfg: StackConfig, outcome: dict[str, Any], started: float, failed: bool = False) -> bool:
    """The run's artifact, history record and Mattermost post; True when Mattermost took the post."""
    outcome["seconds"] = round(time.monotonic() - started, 1)
    md = "# Module upgrade\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in outcome.items())
    publish_markdown("module-upgrade", md, f"module upgrade of {outcome['database']}")
    history.record(Bucket.open(cfg.spaces), "upgrades", {"stack": cfg.name, "failed": failed, **outcome},
                   outcome["database"])
    return notify(cfg.mattermost, f"Module upgrade of {outcome['database']} on {cfg.name}: {outcome.get('result')}",
                  md, level="danger" if failed else "good")
