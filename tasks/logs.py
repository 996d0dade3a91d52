"""Log-shipping tasks: ship one pass (bounded in time, resumable), then post grouped critical lines."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from prefect import task

from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.logs import alerts
from odoo_stack_ops.logs.ship import find_services, make_sink, ship
from odoo_stack_ops.notify import notify
from tasks.common import TRANSIENT_RETRIES, logger


@task(name="ship-logs", **TRANSIENT_RETRIES)
def ship_logs(cfg: StackConfig, services: list[str], batch_size: int, max_seconds: float, settle_s: float,
              levels: list[str], patterns: list[str]) -> dict[str, Any]:
    sink = make_sink(cfg)
    try:
        sink.migrate()
        with Connections(cfg) as conns:
            found = find_services(conns.docker(), services, cfg.docker.compose_project)
            stats = ship(conns.docker(), found, host=cfg.name, sink=sink, batch_size=batch_size,
                         max_seconds=max_seconds, settle_s=settle_s,
                         is_critical=alerts.critical_matcher(levels, patterns))
    finally:
        sink.close()
    logger().info("shipped %d rows (%d lines) in %d batches in %.1f s%s", stats.rows, stats.lines, stats.batches,
                  stats.seconds, "" if stats.finished else "; backlog left for the next run")
    return asdict(stats)


@task(name="post-critical-lines", cache_policy=TRANSIENT_RETRIES["cache_policy"])
def post_critical(cfg: StackConfig, critical: list[dict[str, Any]], min_interval_s: float) -> list[dict[str, Any]]:
    path = cfg.state_dir.expanduser() / "log-alerts.json"
    messages, state = alerts.plan_messages(critical, alerts.load_state(path), time.time(), min_interval_s)
    for m in messages:
        lines = "\n".join(f"[{s['level']}] {s['message']}" for s in m["sample"])
        extra = f"\n(+{m['suppressed_before']} held back since the last message)" if m["suppressed_before"] else ""
        notify(cfg.mattermost, f"{m['count']} critical log line(s) in {m['group'].replace('|', ' / ')}",
               f"```\n{lines}\n```{extra}", level="danger")
    alerts.save_state(path, state)
    return messages
