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

PENDING = "log-alerts-pending"  # critical lines shipped and not posted yet


@task(name="ship-logs", **TRANSIENT_RETRIES)
def ship_logs(cfg: StackConfig, options: LogShippingOptions) -> dict[str, Any]:
    """One pass over the containers' logs into ops.logs; returns the stats and this pass's critical groups.

    Each committed batch's critical lines are added to the shared PENDING state at once: a run that dies (or a
    pass that fails, or is retried) after its batches were committed and before post_critical used to lose
    their alert, since the next run reads after the committed cursor and never sees those lines again."""
    collector = alerts.CriticalCollector(samples=options.alert_samples)

    def keep_pending() -> None:
        fresh = collector.take_unsaved()
        if fresh:
            with shared_state.held(cfg, PENDING) as slot:
                slot.save(json.dumps(alerts.merge_groups(alerts.parse_state(slot.text), fresh,
                                                         options.alert_samples)))

    sink = make_sink(cfg)
    try:
        sink.migrate()
        with Connections(cfg) as conns:
            client = conns.docker()
            found = find_services(client, options.services or list(cfg.containers), cfg.docker.compose_project)
            stats = ship(found, host=cfg.name, sink=sink, batch_size=options.batch_size,
                         max_seconds=options.max_seconds, settle_s=options.settle_s,
                         matcher=alerts.CriticalMatcher(options.critical_levels, options.critical_patterns),
                         collector=collector, on_commit=keep_pending)
    finally:
        sink.close()
    logger().info("shipped %d rows (%d lines) in %d batches in %.1f s%s", stats.rows, stats.lines, stats.batches,
                  stats.seconds, "" if stats.finished else "; backlog left for the next run")
    return {**asdict(stats), "critical": collector.as_dict()}


@task(name="post-critical-lines", **NO_RETRIES)
def post_critical(cfg: StackConfig, min_interval_s: float) -> list[dict[str, Any]]:
    """Grouped, rate-limited Mattermost messages of the shipped critical lines not posted yet (this run's, and
    those of a run that died before posting); the shared state keeps what was held back between runs
    (whichever worker runs next)."""
    sent = []
    with shared_state.held(cfg, "log-alerts") as slot, shared_state.held(cfg, PENDING) as pending:
        groups = alerts.parse_state(pending.text)
        messages, state = alerts.plan_messages(groups, alerts.parse_state(slot.text), time.time(), min_interval_s)
        for m in messages:
            title, text, level = alerts.render(m)
            if notify(cfg.mattermost, title, text, level=level, fields={"lines": m["count"]}):
                sent.append(m)
            else:
                state = alerts.undelivered(state, m)
        pending.save("{}")  # posted, or counted in `state` as held back (undelivered ones too)
        slot.save(json.dumps(state))
    if len(sent) < len(messages):
        logger().warning("%d of %d critical-log message(s) not delivered; kept for the next run",
                         len(messages) - len(sent), len(messages))
    return sent
