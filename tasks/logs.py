"""Log-shipping tasks: ship one pass (bounded in time, resumable), then post grouped critical lines."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from prefect import task

from odoo_stack_ops import shared_state
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.connect import Connections
from odoo_stack_ops.logs import alerts
from odoo_stack_ops.logs.options import LogShippingOptions
from odoo_stack_ops.logs.ship import find_services, make_sink, ship
from odoo_stack_ops.notify import notify
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, logger


@task(name="ship-logs", **TRANSIENT_RETRIES)
def ship_logs(cfg: StackConfig, options: LogShippingOptions) -> dict[str, Any]:
    """One pass over the containers' logs into ops.logs; returns the stats and this pass's critical groups."""
    collector = alerts.CriticalCollector(samples=options.alert_samples)
    sink = make_sink(cfg)
    try:
        sink.migrate()
        with Connections(cfg) as conns:
            client = conns.docker()
            found = find_services(client, options.services or list(cfg.containers), cfg.docker.compose_project)
            stats = ship(found, host=cfg.name, sink=sink, batch_size=options.batch_size,
                         max_seconds=options.max_seconds, settle_s=options.settle_s,
                         matcher=alerts.CriticalMatcher(options.critical_levels, options.critical_patterns),
                         collector=collector)
    finally:
        sink.close()
    logger().info("shipped %d rows (%d lines) in %d batches in %.1f s%s", stats.rows, stats.lines, stats.batches,
                  stats.seconds, "" if stats.finished else "; backlog left for the next run")
    return {**asdict(stats), "critical": collector.as_dict()}


@task(name="post-critical-lines", **NO_RETRIES)
def post_critical(cfg: StackConfig, groups: dict[str, dict[str, Any]], min_interval_s: float) -> list[dict[str, Any]]:
    """Grouped, rate-limited Mattermost messages; the shared state keeps what was held back between runs
    (whichever worker runs next)."""
    sent = []
    with shared_state.held(cfg, "log-alerts") as slot:
        messages, state = alerts.plan_messages(groups, alerts.parse_state(slot.text), time.time(), min_interval_s)
        for m in messages:
            title, text, level = alerts.render(m)
            if notify(cfg.mattermost, title, text, level=level, fields={"lines": m["count"]}):
                sent.append(m)
            else:
                state = alerts.undelivered(state, m)
        slot.save(json.dumps(state))
    if len(sent) < len(messages):
        logger().warning("%d of %d critical-log message(s) not delivered; kept for the next run",
                         len(messages) - len(sent), len(messages))
    return sent
