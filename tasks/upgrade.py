"""Module-upgrade tasks, one verb each, so every step of an upgrade (and of its rollback) is a task run in the
Prefect UI with its own duration and logs."""

from __future__ import annotations

from typing import Any

from prefect import task

from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.upgrade import plan as pl
from odoo_stack_ops.upgrade import steps
from tasks.common import NO_RETRIES, logger


@task(name="plan-upgrade", **NO_RETRIES)
def plan_upgrade(cfg: StackConfig, conns: Connections, database: str, *, install: list[str], upgrade: list[str],
                 changed: bool, addons_ref: str | None) -> pl.UpgradePlan:
    """Names, dependencies and changed addons, read from `addons_ref` unpacked beside the served checkout (the
    checkout and Odoo are not touched), else from odoo-core."""
    host = conns.host()
    repos = steps.addons_repos(host, cfg.odoo.compose_dir) if addons_ref else []
    staged_dir, staged = steps.stage_ref(host, repos, addons_ref) if addons_ref else (None, {})
    try:
        sources = steps.addons_sources(conns.container("odoo-core"), host, cfg.odoo.addons_paths, staged)
        states = steps.module_states(cfg.database, database)
        addons = steps.list_addons(sources)
        wanted = set(install) | set(upgrade) | (set(addons) if changed else set())
        manifests = steps.find_manifests(sources, sorted(wanted))
        for m in list(manifests.values()):
            manifests.update(steps.find_manifests(sources, [d for d in m.get("depends", []) if d not in manifests]))
        hashes = steps.addon_hashes(sources, [a for a in addons if states.get(a) == "installed" or a in wanted])
        plan = pl.make_plan(install=install, upgrade=upgrade, changed=changed, manifests=manifests, states=states,
                            hashes=hashes, stored=steps.stored_hashes(cfg.database, database))
    finally:
        if staged_dir:
            host.run(["rm", "-rf", staged_dir], check=False, timeout=300)
    logger().info("plan for %s: install %s, upgrade %s, problems %s", database, plan.install, plan.upgrade,
                  plan.problems)
    return plan


@task(name="stop-odoo", **NO_RETRIES)
def stop_odoo(conns: Connections) -> None:
    """odoo-core stopped; its commands run in a stand-by container on the same volumes."""
    steps.stop_for_maintenance(conns, "odoo-core")


@task(name="start-odoo", **NO_RETRIES)
def start_odoo(cfg: StackConfig, conns: Connections, timeout_s: float) -> float:
    """Stand-by container removed, odoo-core started; seconds until /web/health answers 200."""
    steps.end_maintenance(conns, "odoo-core")
    return steps.wait_healthy(cfg.odoo.health_url, timeout_s)


@task(name="end-stale-maintenance", **NO_RETRIES)
def end_stale_maintenance(conns: Connections) -> list[str]:
    """A stand-by container an upgrade interrupted before it changed anything left (no mark in it): removed,
    odoo-core started again."""
    done = steps.end_maintenance(conns, "odoo-core")
    if done:
        logger().warning("a stand-by container left by an interrupted upgrade was removed and odoo-core started")
    return done


@task(name="find-interrupted-upgrade", **NO_RETRIES)
def interrupted_upgrade(conns: Connections) -> dict[str, Any] | None:
    """The mark of an upgrade killed or cancelled while it changed the stack (its stand-by still there), if any."""
    marks = steps.changing_marks(conns, "odoo-core")
    return marks[0] if marks else None


@task(name="mark-upgrade-changing", **NO_RETRIES)
def mark_changing(conns: Connections, database: str, rollback_point: str, commits: dict[str, str]) -> None:
    steps.mark_changing(conns, "odoo-core", {"database": database, "rollback_point": rollback_point,
                                             "commits": commits})


@task(name="record-code", **NO_RETRIES)
def record_code(cfg: StackConfig, conns: Connections) -> dict[str, str]:
    """Each addons repository's commit: what a rollback checks out again."""
    return steps.record_commits(conns.host(), steps.addons_repos(conns.host(), cfg.odoo.compose_dir))


@task(name="deploy-code", **NO_RETRIES)
def deploy_code(cfg: StackConfig, conns: Connections, ref: str) -> None:
    """Check `ref` out in every addons repository."""
    steps.deploy_code(conns.host(), cfg.odoo.compose_dir, ref)
    logger().info("deployed %s", ref)


@task(name="put-code-back", **NO_RETRIES)
def put_code_back(conns: Connections, commits: dict[str, str]) -> list[str]:
    return steps.checkout_commits(conns.host(), commits)


@task(name="upgrade-modules", **NO_RETRIES)
def upgrade_modules(cfg: StackConfig, conns: Connections, database: str, plan: pl.UpgradePlan,
                    timeout_s: float) -> None:
    """`odoo -i/-u --stop-after-init`, every log line to the run's logs; raises on an error line, a non-zero
    exit, a hang or a module not installed afterwards."""
    log = logger()
    errors = steps.run_odoo(conns.container("odoo-core"), cfg, database, plan.install, plan.upgrade, timeout_s,
                            lambda line: log.info("odoo: %s", line))
    if errors:
        raise OpsError(f"odoo logged {len(errors)} error(s): {errors[0]}")
    bad = steps.check_states(cfg.database, database, plan.install + plan.upgrade)
    if bad:
        raise OpsError(f"modules not installed after odoo ran: {bad}")


@task(name="reset-module-states", **NO_RETRIES)
def reset_module_states(cfg: StackConfig, database: str) -> int:
    return steps.reset_module_states(cfg.database, database)


@task(name="store-addon-hashes", **NO_RETRIES)
def store_hashes(cfg: StackConfig, database: str, hashes: dict[str, Any]) -> None:
    steps.store_hashes(cfg.database, database, hashes)
