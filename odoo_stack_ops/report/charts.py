"""The weekly report's charts as PNG bytes (pure; matplotlib's Agg backend: no display, no GUI toolkit)."""

from __future__ import annotations

import io

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from odoo_stack_ops.report.tables import MIB

SIZE = (9, 3.6)
DPI = 100
MAX_LINES = 8


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


def backups_chart(nights: pd.DataFrame, tz: str) -> bytes:
    """Stored size (MiB) and duration (s) per night and database; unverified nights marked with a red x."""
    fig, (size_ax, dur_ax) = plt.subplots(1, 2, figsize=SIZE, dpi=DPI)
    if nights.empty:
        _empty(size_ax, "no backups")
    for db, g in nights.groupby("database"):
        when = g["taken_at"].dt.tz_convert(tz).dt.tz_localize(None)
        size_ax.plot(when, g["stored_bytes"] / MIB, marker="o", label=db)
        dur_ax.plot(when, g["duration_s"], marker="o", label=db)
        bad = ~g["verified"]
        size_ax.scatter(when[bad], g["stored_bytes"][bad] / MIB, marker="x", color="red", s=80, zorder=3)
    size_ax.set_title("stored size per night (MiB)")
    dur_ax.set_title("backup duration (s)")
    for ax in (size_ax, dur_ax):
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(alpha=0.3)
    if not nights.empty:
        size_ax.legend(fontsize=8)
    return _png(fig)


def uptime_chart(daily: pd.DataFrame) -> bytes:
    """Daily uptime % of the checks that were down at all (the worst MAX_LINES), else one line saying so."""
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    worst = daily.groupby("check")["uptime_pct"].min().sort_values() if len(daily) else pd.Series(dtype=float)
    worst = worst[worst < 100].head(MAX_LINES)
    if worst.empty:
        _empty(ax, "every check up 100 % of the sweeps" if len(daily) else "no health history")
    for check in worst.index:
        g = daily[daily["check"] == check]
        ax.plot(g["day"], g["uptime_pct"], marker="o", label=check)
    if not worst.empty:
        ax.legend(fontsize=8)
    ax.set_title("daily uptime of checks that failed (%)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def errors_chart(errors: pd.DataFrame) -> bytes:
    """Error lines per day, stacked by container."""
    fig, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    if errors.empty or errors.to_numpy().sum() == 0:
        _empty(ax, "no error lines")
    else:
        bottom = pd.Series(0, index=errors.index)
        for container in errors.columns:  # a date axis thins its own ticks: a year stays readable and quick
            ax.bar(errors.index, errors[container], bottom=bottom, width=0.8, label=container)
            bottom += errors[container]
        ax.legend(fontsize=8)
    ax.set_title("error lines per day (ERROR + CRITICAL)")
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
