"""Deployments per stack, from the inventory: every deployment of prefect.yaml once per stack, named so the UI
groups them (`backup/nightly-<stack>`), with the stack's own schedule and time zone, its nightly at a stable
offset inside its backup window; the fleet runs (`backup/fleet`, `health-sweep/fleet`: over every stack) once.
Pure: prefect.yaml's document in, the generated document out.

    uv run python -m deployments.setup     # with STACK_OPS_FILE pointing at an inventory: writes prefect.stacks.yaml
    uv run prefect --no-prompt deploy --all --prefect-file prefect.stacks.yaml
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from odoo_stack_ops.config import StackConfig

NIGHTLY_ENTRYPOINT = "flows/backup.py:backup"
# over the whole inventory: deployed once, not per stack
FLEET_ENTRYPOINTS = ("flows/backup.py:backup_fleet", "flows/health.py:health_fleet")
GENERATED = "prefect.stacks.yaml"


def offset_minutes(stack: str, window_minutes: int) -> int:
    """Stable for a name (sha256, not Python's salted hash), spread evenly over the window."""
    return int.from_bytes(hashlib.sha256(stack.encode()).digest()[:8], "big") % window_minutes


DAYS_OF_WEEK = re.compile(r"^[0-7](-[0-7])?(,[0-7](-[0-7])?)*$")


def spread_cron(cron: str, minutes: int) -> str:
    """A cron with a plain minute and hour (`M H dom mon dow`) moved `minutes` later. Past midnight its days move
    too: a day-of-week list (digits, ranges) one day later; a cron restricted by day of month or month, or naming
    its days, that would cross midnight is returned unchanged, as is any other form (setup warns)."""
    fields = cron.split()
    if len(fields) != 5 or not (fields[0].isdigit() and fields[1].isdigit()):
        return cron
    total = int(fields[1]) * 60 + int(fields[0]) + minutes
    dom, month, dow = fields[2:]
    if total >= 24 * 60:
        if dom != "*" or month != "*" or not (dow == "*" or DAYS_OF_WEEK.match(dow)):
            return cron
        if dow != "*":
            ranges = [(int(a), int(b or a)) for a, _, b in (part.partition("-") for part in dow.split(","))]
            if any(a > b for a, b in ranges):  # a range that wraps (5-1): left to the cron library
                return cron
            days = {d % 7 for a, b in ranges for d in range(a, b + 1)}
            dow = ",".join(str(d) for d in sorted((d + 1) % 7 for d in days))
        total -= 24 * 60
    return f"{total % 60} {total // 60} {dom} {month} {dow}"


def unspread(stacks: dict[str, StackConfig]) -> list[str]:
    """The stacks whose nightly cron `spread_cron` leaves as it is although their offset is not zero."""
    return sorted(name for name, cfg in stacks.items()
                  if (off := offset_minutes(name, cfg.backup.window_minutes))
                  and spread_cron(cfg.backup.schedule_cron, off) == cfg.backup.schedule_cron)


def per_stack(doc: dict[str, Any], stacks: dict[str, StackConfig]) -> dict[str, Any]:
    """prefect.yaml's document with each deployment repeated per stack (anchors already resolved by the loader)."""
    out = {k: v for k, v in doc.items() if k not in ("deployments", "definitions")}
    deployments = [copy.deepcopy(d) for d in doc.get("deployments") or [] if d["entrypoint"] in FLEET_ENTRYPOINTS]
    for name, cfg in sorted(stacks.items()):
        for base in doc.get("deployments") or []:
            if base["entrypoint"] in FLEET_ENTRYPOINTS:
                continue
            d = copy.deepcopy(base)
            d["name"] = f"{base['name']}-{name}"
            d["parameters"] = {**(base.get("parameters") or {}), "stack": name}
            d["tags"] = [*(base.get("tags") or []), f"stack:{name}"]
            for schedule in d.get("schedules") or []:
                if "cron" not in schedule:
                    continue
                schedule["timezone"] = cfg.backup.timezone
                if d["entrypoint"] == NIGHTLY_ENTRYPOINT:
                    schedule["cron"] = spread_cron(cfg.backup.schedule_cron,
                                                   offset_minutes(name, cfg.backup.window_minutes))
            deployments.append(d)
    out["deployments"] = deployments
    return out


def cluster_limits(stacks: dict[str, StackConfig]) -> dict[str, int]:
    """The dump limit of each database cluster the stacks use (the smallest configured wins)."""
    from odoo_stack_ops.locks import cluster_limit_name  # noqa: PLC0415

    limits: dict[str, int] = {}
    for cfg in stacks.values():
        name = cluster_limit_name(cfg.database.host, cfg.database.port)
        limits[name] = min(limits.get(name, cfg.database.max_parallel_dumps), cfg.database.max_parallel_dumps)
    return limits
