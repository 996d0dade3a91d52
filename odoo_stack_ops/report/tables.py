"""The weekly report's figures (pure): history frames in, tables and trend alarms out.

Inputs are small because the database already summarised them (hourly check counts, the moments a check
started or stopped failing, daily log counts per container and level); pandas groups, resamples and joins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from odoo_stack_ops.backup.manifest import Manifest

MIB = 1024 * 1024
TRAILING = 7  # nights in the trailing median
MIN_TRAILING = 3  # fewer earlier nights than this: no trend to compare against
SIZE_DROP = 0.30  # stored size more than 30 % below the trailing median
SIZE_RISE = 0.50  # … or more than 50 % above it
SLOWER = 2.0  # duration more than twice the trailing median
ERROR_LEVELS = ("ERROR", "CRITICAL")

NIGHT_COLUMNS = ["database", "stamp", "taken_at", "verified", "raw_bytes", "stored_bytes", "dump_s", "duration_s"]


@dataclass(frozen=True)
class Window:
    """The report's period [start, end) and the stack's time zone (days are the stack's days)."""

    start: pd.Timestamp
    end: pd.Timestamp
    tz: str

    @classmethod
    def ending(cls, end: datetime, days: int, tz: str) -> Window:
        stop = pd.Timestamp(end).tz_convert("UTC")
        return cls(stop - pd.Timedelta(days=days), stop, tz)

    @property
    def days(self) -> float:
        return (self.end - self.start) / pd.Timedelta(days=1)

    def local_days(self) -> pd.DatetimeIndex:
        """Every local calendar day the window touches (naive local midnights)."""
        first = self.start.tz_convert(self.tz).normalize().tz_localize(None)
        last = (self.end - pd.Timedelta(microseconds=1)).tz_convert(self.tz).normalize().tz_localize(None)
        return pd.date_range(first, last, freq="D")


@dataclass(frozen=True)
class Alarm:
    database: str
    stamp: str
    kind: str  # size-drop, size-rise, slow, unverified
    text: str


def nights_frame(manifests: Iterable[Manifest]) -> pd.DataFrame:
    """One row per published backup (night), oldest first."""
    rows = [(m.database, m.stamp, pd.Timestamp(m.started_at).tz_convert("UTC"), bool(m.verified), m.dump.raw_bytes,
             m.dump.stored_bytes, m.dump.duration_s, m.duration_s) for m in manifests]
    frame = pd.DataFrame(rows, columns=NIGHT_COLUMNS)
    frame["taken_at"] = pd.to_datetime(frame["taken_at"], utc=True)
    return frame.sort_values(["database", "taken_at"], ignore_index=True)


def with_trends(nights: pd.DataFrame) -> pd.DataFrame:
    """Each night with the median stored size and duration of the TRAILING nights before it (its own excluded)."""
    out = nights.sort_values(["database", "taken_at"], ignore_index=True)
    by_db = out.groupby("database", sort=False)
    for col in ("stored_bytes", "duration_s"):
        out[f"{col}_median"] = by_db[col].transform(
            lambda s: s.rolling(TRAILING, min_periods=MIN_TRAILING).median().shift(1))
    return out


def trend_alarms(nights: pd.DataFrame, window: Window) -> list[Alarm]:
    """Alarms for the nights inside the window: stored size down > 30 % or up > 50 % against the trailing
    7-night median, duration more than twice its median, any night not verified. Earlier nights only feed the
    medians. A night may raise several alarms."""
    trend = with_trends(nights)
    inside = trend[(trend["taken_at"] >= window.start) & (trend["taken_at"] < window.end)]
    alarms = []
    for n in inside.itertuples(index=False):
        size_med, dur_med = n.stored_bytes_median, n.duration_s_median
        if pd.notna(size_med) and size_med > 0:
            change = n.stored_bytes / size_med - 1
            if change < -SIZE_DROP:
                alarms.append(Alarm(n.database, n.stamp, "size-drop", f"stored size {n.stored_bytes / MIB:.1f} MiB "
                                    f"is {-change:.0%} below the trailing median {size_med / MIB:.1f} MiB"))
            elif change > SIZE_RISE:
                alarms.append(Alarm(n.database, n.stamp, "size-rise", f"stored size {n.stored_bytes / MIB:.1f} MiB "
                                    f"is {change:.0%} above the trailing median {size_med / MIB:.1f} MiB"))
        if pd.notna(dur_med) and dur_med > 0 and n.duration_s > SLOWER * dur_med:
            alarms.append(Alarm(n.database, n.stamp, "slow", f"took {n.duration_s:.0f} s, "
                                f"{n.duration_s / dur_med:.1f}x the trailing median {dur_med:.0f} s"))
        if not n.verified:
            alarms.append(Alarm(n.database, n.stamp, "unverified", "not verified: not a restore point"))
    return alarms


def backup_table(nights: pd.DataFrame, drills: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Per database: nights, verified %, newest raw and stored size, median duration and dump throughput, the
    newest verified backup's age (worst-case data loss, from all nights given) and the last drill's time to
    recover."""
    inside = nights[(nights["taken_at"] >= window.start) & (nights["taken_at"] < window.end)].copy()
    inside["mib_per_s"] = inside["raw_bytes"] / MIB / inside["dump_s"].where(inside["dump_s"] > 0)
    table = inside.groupby("database").agg(
        nights=("stamp", "size"), verified_pct=("verified", "mean"), raw_mib=("raw_bytes", "last"),
        stored_mib=("stored_bytes", "last"), duration_s=("duration_s", "median"),
        throughput_mib_s=("mib_per_s", "median"))
    table["verified_pct"] *= 100
    table[["raw_mib", "stored_mib"]] /= MIB
    newest = nights[nights["verified"]].groupby("database")["taken_at"].max()
    table["newest_verified_age_h"] = (window.end - newest.reindex(table.index)) / pd.Timedelta(hours=1)
    if len(drills):
        last = drills.sort_values("at").groupby("database")["recover_s"].last()
        table["drill_recover_s"] = last.reindex(table.index)
    else:
        table["drill_recover_s"] = float("nan")
    return table.reset_index().round(2)


def uptime_daily(hourly: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Per check and local day: uptime % (share of sweeps not failing), resampled from hourly counts."""
    if hourly.empty:
        return pd.DataFrame(columns=["check", "day", "uptime_pct"])
    local = hourly.assign(hour=pd.to_datetime(hourly["hour"], utc=True).dt.tz_convert(window.tz).dt.tz_localize(None))
    daily = local.set_index("hour").groupby("check")[["samples", "fails"]].resample("D").sum().reset_index()
    daily = daily[daily["samples"] > 0]
    daily["uptime_pct"] = (100 * (1 - daily["fails"] / daily["samples"])).round(3)
    return daily.rename(columns={"hour": "day"})[["check", "day", "uptime_pct"]]


def episodes(changes: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Failure episodes from the moments each check started (failing=True) or stopped failing: start, end (NaT
    while still failing), minutes to recover. A check failing when the window opened starts an episode there."""
    cols = ["check", "start", "end", "recover_min"]
    if changes.empty:
        return pd.DataFrame(columns=cols)
    ch = changes.sort_values(["check", "ts"]).assign(ts=lambda f: pd.to_datetime(f["ts"], utc=True))
    ch["end"] = ch.groupby("check")["ts"].shift(-1)
    eps = ch[ch["failing"]].rename(columns={"ts": "start"})
    eps = eps.assign(start=eps["start"].clip(lower=window.start))
    eps["recover_min"] = (eps["end"] - eps["start"]) / pd.Timedelta(minutes=1)
    return eps[cols].reset_index(drop=True)


def check_table(hourly: pd.DataFrame, changes: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Per check: sweeps, uptime %, incidents (failure episodes begun or running in the window), mean time to
    recover (minutes, over episodes that ended), and whether it is failing now."""
    cols = ["check", "sweeps", "uptime_pct", "incidents", "mttr_min", "failing_now"]
    if hourly.empty:
        return pd.DataFrame(columns=cols)
    table = hourly.groupby("check")[["samples", "fails"]].sum()
    table["uptime_pct"] = 100 * (1 - table["fails"] / table["samples"])
    eps = episodes(changes, window)
    by_check = eps.groupby("check")
    table["incidents"] = by_check.size().reindex(table.index).fillna(0).astype(int)
    table["mttr_min"] = by_check["recover_min"].mean().reindex(table.index)
    table["failing_now"] = by_check["end"].apply(lambda e: bool(e.isna().any())).reindex(table.index).fillna(False)
    table = table.rename(columns={"samples": "sweeps"}).reset_index()
    return table.sort_values(["uptime_pct", "check"]).round(3)[cols].reset_index(drop=True)


def log_tables(daily: pd.DataFrame, window: Window) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per container and level: lines, lines per day, error lines per day; errors per local day x container)."""
    days = window.local_days()
    if daily.empty:
        return (pd.DataFrame(columns=["container", "level", "lines", "lines_per_day", "error_lines_per_day"]),
                pd.DataFrame(index=days))
    frame = daily.assign(level=daily["level"].fillna("-"), day=pd.to_datetime(daily["day"]))
    frame["errors"] = frame["lines"].where(frame["level"].isin(ERROR_LEVELS), 0)
    per = frame.groupby(["container", "level"])[["lines", "errors"]].sum()
    per["lines_per_day"] = per["lines"] / window.days
    per["error_lines_per_day"] = per["errors"] / window.days
    per = per.reset_index().drop(columns="errors").sort_values(["container", "level"])
    errors = (frame.pivot_table(index="day", columns="container", values="errors", aggfunc="sum")
              .reindex(days, fill_value=0).fillna(0).astype(int))
    errors.index.name = "day"
    return per.round(2).reset_index(drop=True), errors


def upgrade_table(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per recorded upgrade run: when, database, result, downtime."""
    cols = ["at", "database", "result", "downtime_s", "modules"]
    if not docs:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame(docs).reindex(columns=[*cols[:4], "plan", "dry_run"])
    frame["modules"] = frame["plan"].map(lambda p: ", ".join((p or {}).get("install", []) + (p or {}).get("upgrade", []))
                                         if isinstance(p, dict) else "")
    frame["downtime_s"] = pd.to_numeric(frame["downtime_s"], errors="coerce").fillna(0.0)
    return frame[cols]
