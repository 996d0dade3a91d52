"""Weekly-report tasks, one verb each: gather the history, build the report, store its files, publish it, post
the summary."""

from __future__ import annotations

import base64
from typing import Any

import pandas as pd
from prefect import task

from odoo_stack_ops.backup.spaces import Bucket
from odoo_stack_ops.config import StackConfig
from odoo_stack_ops.notify import notify
from odoo_stack_ops.report import build, sources
from odoo_stack_ops.report.tables import Window
from tasks.common import NO_RETRIES, TRANSIENT_RETRIES, logger, publish_markdown

DRILL_LOOKBACK = pd.Timedelta(days=35)  # the last drill may be older than the week (weekly, may have failed)


def reports_prefix(cfg: StackConfig, stamp: str) -> str:
    return f"{cfg.spaces.prefix}/reports/weekly/{stamp}/"


@task(name="gather-history", **TRANSIENT_RETRIES)
def gather_history(cfg: StackConfig, window: Window) -> dict[str, Any]:
    """Manifests, drills and upgrades from Spaces; checks and logs summarised by the ops database (SUPABASE_DB_URL;
    without it those sections say there is no history)."""
    bucket = Bucket.open(cfg.spaces)
    dsn = cfg.supabase.db_dsn
    found = {
        "nights": sources.load_nights(bucket, window),
        "drills": sources.load_events(bucket, "drills", window.start - DRILL_LOOKBACK),
        "upgrades": sources.load_events(bucket, "upgrades", window.start),
        "database": (sources.load_database_history(dsn.get_secret_value(), cfg.name, window) if dsn
                     else sources.empty_database_history()),
    }
    logger().info("history: %d nights, %d drills, %d upgrades, %d check-hours, %d log groups%s", len(found["nights"]),
                  len(found["drills"]), len(found["upgrades"]), len(found["database"]["hourly"]),
                  len(found["database"]["logs"]), "" if dsn else " (no SUPABASE_DB_URL: no checks or logs)")
    return found


@task(name="build-report", **NO_RETRIES)
def build_report(cfg: StackConfig, window: Window, found: dict[str, Any]) -> build.Report:
    """Tables and trend alarms (pure)."""
    report = build.build_report(cfg.name, window, found["nights"], found["drills"], found["database"],
                                found["upgrades"])
    for alarm in report.alarms:
        logger().warning("trend alarm %s for %s/%s: %s", alarm.kind, alarm.database, alarm.stamp, alarm.text)
    return report


@task(name="store-report-files", **TRANSIENT_RETRIES)
def store_files(cfg: StackConfig, report: build.Report, stamp: str) -> dict[str, bytes]:
    """CSV of every table and the PNG charts under `{prefix}/reports/weekly/{stamp}/`; returns the charts."""
    bucket = Bucket.open(cfg.spaces)
    where = reports_prefix(cfg, stamp)
    charts = report.charts()
    for name, data in report.csvs().items():
        bucket.put_bytes(f"{where}{name}.csv", data, "text/csv")
    for name, png in charts.items():
        bucket.put_bytes(f"{where}{name}.png", png, "image/png")
    logger().info("report files in s3://%s/%s", cfg.spaces.bucket, where)
    return charts


def inline_png(png: bytes) -> str:
    """The chart as a data URI: the Prefect UI shows it with no link that expires or carries the Spaces key id."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


@task(name="publish-report", **NO_RETRIES)
def publish_report(cfg: StackConfig, report: build.Report, charts: dict[str, bytes], stamp: str) -> str:
    md = build.markdown(report, {k: inline_png(v) for k, v in charts.items()},
                        f"s3://{cfg.spaces.bucket}/{reports_prefix(cfg, stamp)}")
    publish_markdown("ops-report", md, f"weekly ops report of {cfg.name}: {len(report.alarms)} trend alarm(s)")
    return md


@task(name="post-report-summary", **NO_RETRIES)
def post_summary(cfg: StackConfig, report: build.Report) -> bool:
    """The alarms and one line per area to Mattermost (never raises)."""
    title, text, level = build.summary(report)
    return notify(cfg.mattermost, title, text, level=level)
