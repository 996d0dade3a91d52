"""Flow `report` (deployment `weekly`, Monday 08:00): the trends no single run shows. Per database the backup
nights (verified %, sizes, duration, throughput, worst-case data loss, time to recover), per check uptime,
incidents and time to recover, per container log and error lines per day, upgrades and their downtime; trend
alarms on the backups. A markdown artifact with charts, the same data as CSV in Spaces, a Mattermost summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from odoo_stack_ops.backup import layout
from odoo_stack_ops.config import load_config
from odoo_stack_ops.report.tables import Window
from tasks.report import build_report, gather_history, post_summary, publish_report, store_files


@flow(name="report", description="Weekly: backups, uptime, logs and upgrades as tables, charts and trend alarms")
def ops_report(stack_file: str | None = None, days: int = 7, stack: str | None = None) -> dict[str, Any]:
    """The report over the `days` before now; returns the alarms and where the files went."""
    cfg = load_config(stack_file, stack=stack)
    now = datetime.now(UTC)
    window = Window.ending(now, days, cfg.backup.timezone)
    found = gather_history(cfg, window)
    report = build_report(cfg, window, found)
    stamp = layout.stamp(now)
    charts = store_files(cfg, report, stamp)
    publish_report(cfg, report, charts, stamp)
    delivered = post_summary(cfg, report)
    return {"alarms": [vars(a) for a in report.alarms], "files": f"{cfg.spaces.prefix}/reports/weekly/{stamp}/",
            "posted": delivered}
