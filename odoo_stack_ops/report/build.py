"""The weekly report as one value (pure): built from the history frames, rendered as markdown, CSV, PNG and a
short Mattermost summary."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from odoo_stack_ops.report import charts
from odoo_stack_ops.report.tables import (
    Alarm,
    Window,
    backup_table,
    check_table,
    log_tables,
    trend_alarms,
    upgrade_table,
    uptime_daily,
)


@dataclass
class Report:
    stack: str
    window: Window
    nights: pd.DataFrame  # every night loaded (the window's and the trailing ones)
    backups: pd.DataFrame
    alarms: list[Alarm]
    checks: pd.DataFrame
    uptime: pd.DataFrame
    logs: pd.DataFrame
    errors: pd.DataFrame
    upgrades: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def csvs(self) -> dict[str, bytes]:
        """The same data as the tables, one CSV each."""
        inside = self.nights[self.nights["taken_at"] >= self.window.start]
        alarms = pd.DataFrame([vars(a) for a in self.alarms], columns=["database", "stamp", "kind", "text"])
        frames = {"backups": self.backups, "backup_nights": inside, "alarms": alarms, "checks": self.checks,
                  "uptime_daily": self.uptime, "logs": self.logs, "errors_daily": self.errors.reset_index(),
                  "upgrades": self.upgrades}
        return {name: f.to_csv(index=False).encode() for name, f in frames.items()}

    def charts(self) -> dict[str, bytes]:
        inside = self.nights[self.nights["taken_at"] >= self.window.start]
        return {"backups": charts.backups_chart(inside, self.window.tz), "uptime": charts.uptime_chart(self.uptime),
                "errors": charts.errors_chart(self.errors)}


def build_report(stack: str, window: Window, nights: pd.DataFrame, drills: list[dict[str, Any]],
                 database: dict[str, pd.DataFrame], upgrades: list[dict[str, Any]]) -> Report:
    drill_frame = pd.DataFrame(drills, columns=["at", "database", "recover_s"]) if drills else pd.DataFrame()
    logs, errors = log_tables(database["logs"], window)
    return Report(stack=stack, window=window, nights=nights, backups=backup_table(nights, drill_frame, window),
                  alarms=trend_alarms(nights, window), checks=check_table(database["hourly"], database["changes"],
                                                                          window),
                  uptime=uptime_daily(database["hourly"], window), logs=logs, errors=errors,
                  upgrades=upgrade_table(upgrades))


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(frame: pd.DataFrame, empty: str) -> str:
    """A markdown table of a frame (no tabulate needed)."""
    if frame.empty:
        return f"_{empty}_\n"
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns) + "\n"
    return head + "".join("| " + " | ".join(_cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))


def markdown(report: Report, images: dict[str, str], csv_where: str) -> str:
    """The report artifact: alarms first, then backups, checks, logs, upgrades; `images` maps a chart name to
    a URL the Prefect UI can load."""
    w = report.window
    local = f"{w.start.tz_convert(w.tz):%Y-%m-%d %H:%M} to {w.end.tz_convert(w.tz):%Y-%m-%d %H:%M} ({w.tz})"
    parts = [f"# Weekly ops report: {report.stack}", "", local, ""]
    parts += ["## Trend alarms", ""]
    parts += [f"- **{a.kind}** {a.database} `{a.stamp}`: {a.text}" for a in report.alarms] or ["_none_"]
    parts += ["", "## Backups", "", md_table(report.backups, "no backup in the period"),
              "Sizes are the newest night's; duration and throughput (raw MiB per second of pg_dump) are medians; "
              "the newest verified backup's age is the worst-case data loss, the drill's the time to recover.", ""]
    if "backups" in images:
        parts += [f"![backups]({images['backups']})", ""]
    parts += ["## Health checks", "", md_table(report.checks, "no health history (ops.health_checks)"), ""]
    if "uptime" in images:
        parts += [f"![uptime]({images['uptime']})", ""]
    parts += ["## Logs", "", md_table(report.logs, "no log lines (ops.logs)"), ""]
    if "errors" in images:
        parts += [f"![errors]({images['errors']})", ""]
    parts += ["## Upgrades", "", md_table(report.upgrades, "no upgrade in the period"),
              f"Downtime in the period: {report.upgrades['downtime_s'].sum():,.0f} s", ""]
    parts += [f"The same data as CSV: `{csv_where}`", *report.notes]
    return "\n".join(parts) + "\n"


def summary(report: Report) -> tuple[str, str, str]:
    """(title, text, level) of the Mattermost post: the alarms and one line per area."""
    b, c = report.backups, report.checks
    lines = [f"- **{a.kind}** {a.database} `{a.stamp}`: {a.text}" for a in report.alarms]
    if len(b):
        lines.append("- backups: " + "; ".join(
            f"{r.database} {r.nights} nights, {r.verified_pct:.0f} % verified, {r.stored_mib:,.1f} MiB"
            for r in b.itertuples()))
    if len(c):
        down = c[c["incidents"] > 0]
        lines.append(f"- health: {len(c)} checks, {int(down['incidents'].sum())} incident(s)" +
                     (f"; lowest uptime {c.iloc[0]['check']} {c.iloc[0]['uptime_pct']:.2f} %" if len(down) else ""))
    if len(report.logs):
        lines.append(f"- logs: {int(report.logs['lines'].sum()):,} lines, "
                     f"{int(report.errors.to_numpy().sum()):,} error lines")
    if len(report.upgrades):
        lines.append(f"- upgrades: {len(report.upgrades)}, downtime {report.upgrades['downtime_s'].sum():,.0f} s")
    title = f"Weekly ops report of {report.stack}: " + (f"{len(report.alarms)} trend alarm(s)" if report.alarms
                                                          else "no trend alarm")
    return title, "\n".join(lines) or "no history in the period", "warning" if report.alarms else "good"
