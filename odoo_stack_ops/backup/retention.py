"""Retention planning (pure): which published backups and objects to delete, and why.

Rules: keep every backup younger than `days`; GFS keeps the newest verified backup of each of the last
`daily` days, `weekly` ISO weeks and `monthly` months; the newest verified backup of each database is
never deleted; after a failed or unverified night nothing is pruned at all. A filestore object is deleted
only when no retained backup references it. Objects referenced by no backup at all (a crashed night's)
are collected too: the caller plans only after its own run published and runs never overlap (a lock),
so no unreferenced object belongs to a run still in progress.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any


@dataclass(frozen=True)
class BackupRecord:
    """One published backup as listed from its manifest."""

    key: str
    database: str
    taken_at: datetime
    verified: bool
    objects: frozenset[str] = frozenset()
    data_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RetentionPolicy:
    days: int = 30
    daily: int = 0
    weekly: int = 0
    monthly: int = 0


@dataclass(frozen=True)
class RetentionPlan:
    keep: tuple[BackupRecord, ...]
    delete: tuple[BackupRecord, ...]
    delete_keys: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None


def _buckets(taken: datetime, tz: tzinfo) -> dict[str, str]:
    local = taken.astimezone(tz)
    year, week, _ = local.isocalendar()
    return {"daily": local.date().isoformat(), "weekly": f"{year}-W{week:02d}", "monthly": f"{local:%Y-%m}"}


def plan_retention(backups: Iterable[BackupRecord], policy: RetentionPolicy, now: datetime, *, last_run_ok: bool,
                   all_objects: Iterable[str] = (), tz: tzinfo = UTC) -> RetentionPlan:
    """Decide what to keep and delete; deterministic (sorted) output."""
    records = sorted(backups, key=lambda b: (b.database, b.taken_at, b.key))
    by_db: dict[str, list[BackupRecord]] = {}
    for b in records:
        by_db.setdefault(b.database, []).append(b)
    reasons: dict[str, str] = {}
    skipped = None
    if not last_run_ok:
        skipped = "tonight's backup failed or is unverified: nothing is pruned until a night succeeds"
    else:
        unverified = sorted(db for db, items in by_db.items() if not items[-1].verified)
        if unverified:
            skipped = f"the newest backup of {', '.join(unverified)} is not verified: nothing is pruned"
    if skipped:
        for b in records:
            reasons[b.key] = "kept: pruning skipped"
        return RetentionPlan(tuple(records), (), (), reasons, skipped)

    keep: set[str] = set()
    cutoff = now - timedelta(days=policy.days)
    for items in by_db.values():
        verified = [b for b in items if b.verified]
        if verified:
            keep.add(verified[-1].key)
            reasons[verified[-1].key] = "newest verified"
        for b in items:
            if b.taken_at > cutoff:
                keep.add(b.key)
                reasons.setdefault(b.key, f"within {policy.days} days")
        for kind, count in (("daily", policy.daily), ("weekly", policy.weekly), ("monthly", policy.monthly)):
            if count <= 0:
                continue
            seen: list[str] = []
            for b in reversed(verified):  # newest first: the first of each bucket is its newest
                bucket = _buckets(b.taken_at, tz)[kind]
                if bucket in seen:
                    continue
                if len(seen) == count:
                    break
                seen.append(bucket)
                keep.add(b.key)
                reasons.setdefault(b.key, f"{kind} {bucket}")
    kept = tuple(b for b in records if b.key in keep)
    deleted = tuple(b for b in records if b.key not in keep)
    for b in deleted:
        reasons[b.key] = f"older than {policy.days} days" + ("" if b.verified else " (unverified)")
    referenced = set().union(*(b.objects for b in kept)) if kept else set()
    kept_data = set().union(*(b.data_keys for b in kept)) if kept else set()
    doomed = set().union(*(b.data_keys | b.objects for b in deleted)) if deleted else set()
    doomed |= {o for o in all_objects if o not in referenced and not any(o in b.objects for b in records)}
    delete_keys = tuple(sorted(doomed - referenced - kept_data))
    return RetentionPlan(kept, deleted, delete_keys, reasons, None)


def render_plan(plan: RetentionPlan) -> list[dict[str, Any]]:
    """Rows for the run artifact's table."""
    doomed = {b.key for b in plan.delete}
    rows = [{"key": b.key, "database": b.database, "taken_at": b.taken_at.isoformat(), "verified": b.verified,
             "action": "delete" if b.key in doomed else "keep", "reason": plan.reasons.get(b.key, "")}
            for b in sorted((*plan.keep, *plan.delete), key=lambda b: (b.database, b.taken_at))]
    return rows
