"""Flow `log-shipping` (every few minutes): container logs → Supabase ops.logs, exactly once; critical lines
grouped and rate-limited to Mattermost (the seed's Log Aggregation)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from odoo_stack_ops.config import load_config
from tasks.common import publish_markdown
from tasks.logs import post_critical, ship_logs


@flow(name="log-shipping", description="Docker logs to Supabase ops.logs, nothing lost or doubled; critical to Mattermost")
def log_shipping(
    stack_file: str | None = None,
    services: list[str] | None = None,
    batch_size: int = 5000,
    max_seconds: float = 240,
    settle_s: float = 5.0,
    critical_levels: list[str] | None = None,
    critical_patterns: list[str] | None = None,
    alert_interval_minutes: float = 15,
) -> dict[str, Any]:
    cfg = load_config(stack_file)
    stats = ship_logs(cfg, services or list(cfg.containers), batch_size, max_seconds, settle_s,
                      critical_levels or ["CRITICAL", "ERROR"], critical_patterns or [])
    sent = post_critical(cfg, stats["critical"], alert_interval_minutes * 60)
    publish_markdown("log-shipping", f"# Log shipping\n\n- rows: {stats['rows']}\n- lines: {stats['lines']}\n"
                     f"- batches: {stats['batches']}\n- seconds: {stats['seconds']}\n- backlog done: {stats['finished']}"
                     f"\n- critical groups posted: {len(sent)}", f"log shipping of {cfg.name}")
    return {**stats, "critical": len(stats["critical"]), "messages": len(sent)}
