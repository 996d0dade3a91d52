"""DigitalOcean tasks: a droplet snapshot before a risky change (the logic is in odoo_stack_ops/digitalocean.py)."""

from __future__ import annotations

from typing import Any

from prefect import task

from odoo_stack_ops import digitalocean
from odoo_stack_ops.config import StackConfig
from tasks.common import NO_RETRIES, logger


@task(name="snapshot-before", **NO_RETRIES)
def snapshot_before(cfg: StackConfig, reason: str) -> dict[str, Any] | None:
    """With digitalocean.snapshot_before, snapshot the droplet and wait until the snapshot is complete, then keep
    the newest keep_snapshots of this project's; returns what was made and deleted (None when turned off).
    Raises before anything changes when the token may not snapshot (the scope to add is in the message), when
    the action errors or outlasts snapshot_timeout_s. Not retried by Prefect: rate limits are waited out inside."""
    if not cfg.digitalocean.snapshot_before:
        return None
    api = digitalocean.Api(cfg.digitalocean, logger=logger())
    made = digitalocean.take_snapshot(cfg, reason, api)
    logger().info("droplet snapshot %s complete after %.0f s%s", made.name, made.seconds,
                  f"; deleted older: {', '.join(made.deleted)}" if made.deleted else "")
    return made.as_dict()
