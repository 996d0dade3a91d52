"""Flow `log-shipping` (every few minutes): container logs → Supabase ops.logs, exactly once; critical lines
grouped and rate-limited to Mattermost (the seed's Log Aggregation: Docker logs → ops.logs → alerts)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from odoo_stack_ops.config import load_config
from odoo_stack_ops.logs.options import LogShippingOptions
from tasks.common import publish_markdown, stack_run_name
from tasks.logs import post_critical, ship_logs


@flow(name="log-shipping", flow_run_name=stack_run_name("log-shipping"),
      description="Docker logs to Supabase ops.logs, nothing lost or doubled; critical to Mattermost")
def log_shipping(stack_file: str | None = None, options: LogShippingOptions | None = None,
                 stack: str | None = None) -> dict[str, Any]:
    cfg = load_config(stack_file, stack=stack)
    options = options or LogShippingOptions()
    stats = ship_logs(cfg, options)
    sent = post_critical(cfg, options.alert_interval_minutes * 60)
    per = "\n".join(f"| {name} | {n} |" for name, n in sorted(stats["per_container"].items()))
    groups = "\n".join(f"| {k.replace('|', ' / ')} | {g['count']} | {g['level']} |"
                       for k, g in sorted(stats["critical"].items()))
    publish_markdown(
        "log-shipping",
        f"# Log shipping: {cfg.name}\n\n{stats['rows']} rows ({stats['lines']} lines) in {stats['batches']} "
        f"batches, {stats['seconds']} s; backlog {'done' if stats['finished'] else 'left for the next run'}; "
        f"{stats['held_back']} entry(ies) held back to settle.\n\n| container | rows |\n|---|---|\n{per}\n\n"
        f"Critical lines: {sum(g['count'] for g in stats['critical'].values())} in {len(stats['critical'])} "
        f"group(s), {len(sent)} message(s) posted.\n\n| group | lines | worst |\n|---|---|---|\n{groups}\n",
        f"log shipping of {cfg.name}")
    return {**stats, "messages": len(sent)}
