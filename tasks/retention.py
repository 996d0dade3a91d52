"""Retention task: plan with the pure planner, show the plan, delete unless dry_run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import task

from odoo_stack_ops.backup import prune, spaces
from odoo_stack_ops.backup.retention import RetentionPolicy, render_plan
from odoo_stack_ops.config import StackConfig
from tasks.common import TRANSIENT_RETRIES, logger


@task(name="apply-retention", **TRANSIENT_RETRIES)
def apply_retention(cfg: StackConfig, *, last_run_ok: bool, dry_run: bool = False,
                    now: datetime | None = None) -> dict[str, Any]:
    """Returns {"rows": plan rows, "deleted": n, "skipped": reason|None, "dry_run": bool}."""
    log = logger()
    b = cfg.backup
    policy = RetentionPolicy(days=b.retention_days, daily=b.keep_daily, weekly=b.keep_weekly, monthly=b.keep_monthly)
    s3 = spaces.client(cfg.spaces)
    needs: dict[str, str] = {}
    plan = prune.plan(s3, cfg.spaces.bucket, cfg.spaces.prefix, policy, now or datetime.now(UTC),
                      last_run_ok=last_run_ok, tz=b.timezone, needs=needs, grace=timedelta(hours=b.gc_grace_h))
    if plan.skipped:
        log.warning("retention skipped: %s", plan.skipped)
    elif plan.spared:
        log.info("retention left %d unreferenced key(s) alone: younger than %g h or listed by a filestore manifest "
                 "that young (a night in flight)", plan.spared, b.gc_grace_h)
    deleted = 0
    if dry_run:
        log.info("retention dry run: would delete %d backup(s), %d key(s)", len(plan.delete), len(plan.delete_keys))
    elif plan.delete_keys:
        deleted = prune.apply(s3, cfg.spaces.bucket, plan)
        log.info("retention deleted %d backup(s), %d key(s)", len(plan.delete), deleted)
    rows = [{**row, "needs_identity": needs.get(row["key"], "")} for row in render_plan(plan)]
    return {"rows": rows, "deleted": deleted, "skipped": plan.skipped, "dry_run": dry_run,
            "delete_backups": [r.key for r in plan.delete], "spared": plan.spared}
