"""Retention planning (pure): which published backups and filestore objects to delete, and why.

Rules, per database:
- keep every backup younger than `days` (an absolute age, independent of the time zone);
- never delete the newest *verified* backup, whatever its age: it is the last proven restore point;
- GFS, as borg prune counts it: walking verified backups newest first, keep the newest of each of the last
  `daily` days / `weekly` ISO weeks / `monthly` months, where a bucket whose newest is already kept by an
  earlier rule (window, newest verified, a finer tier) is used up without counting; so `days=30, weekly=4`
  keeps four weeklies beyond the window. Buckets are calendar days/weeks/months in `tz`;
- unverified backups outside the window are deleted: they are not restore points.

Pruning is refused entirely (nothing deleted, `skipped` says why) after a failed or unverified night, when
the newest backup of any database is unverified, or when no backup is listed at all.

Objects are shared by every backup of every database (content-addressed), so an object is deleted only when
no retained backup references it. Objects listed in `all_objects` that no backup references at all (a
crashed night's uploads) are deleted too. This assumes the caller plans only after its own run published
its manifest and that runs never overlap (a lock): otherwise a running night's fresh uploads would look
like orphans.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

TIERS = ("daily", "weekly", "monthly")


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

    def __post_init__(self) -> None:
        bad = [f"{name}={value}" for name, value in vars(self).items() if value < 0]
        if bad:
            raise ValueError(f"retention counts must be >= 0: {', '.join(bad)}")


@dataclass(frozen=True)
class RetentionPlan:
    keep: tuple[BackupRecord, ...]
    delete: tuple[BackupRecord, ...]
    delete_keys: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None


def bucket(kind: str, taken_at: datetime, tz: tzinfo = UTC) -> str:
    """The GFS bucket label of a backup: `2026-11-25`, `2026-W48` or `2026-11`, in local time `tz`."""
    local = taken_at.astimezone(tz)
    if kind == "daily":
        return local.date().isoformat()
    if kind == "weekly":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    if kind == "monthly":
        return f"{local:%Y-%m}"
    raise ValueError(f"unknown GFS tier {kind!r}")


def plan_retention(backups: Iterable[BackupRecord], policy: RetentionPolicy, now: datetime, *, last_run_ok: bool,
                   all_objects: Iterable[str] = (), tz: tzinfo = UTC) -> RetentionPlan:
    """Decide what to keep and delete. Deterministic: records sorted by (database, taken_at, key), keys sorted.

    Raises ValueError on naive datetimes or duplicate backup keys (the plan would be ambiguous).
    """
    records = _sorted_records(backups, now)
    by_db: dict[str, list[BackupRecord]] = {}
    for b in records:
        by_db.setdefault(b.database, []).append(b)
    skipped = _refusal(by_db, last_run_ok=last_run_ok)
    if skipped:
        return RetentionPlan(tuple(records), (), (), {b.key: "kept: pruning skipped" for b in records}, skipped)

    kept_because: dict[str, str] = {}
    for items in by_db.values():
        kept_because.update(_keep_reasons(items, policy, now, tz))
    keep = tuple(b for b in records if b.key in kept_because)
    delete = tuple(b for b in records if b.key not in kept_because)
    reasons = {b.key: kept_because.get(b.key) or _delete_reason(b, policy) for b in records}
    return RetentionPlan(keep, delete, _delete_keys(records, keep, delete, all_objects), reasons, None)


def _sorted_records(backups: Iterable[BackupRecord], now: datetime) -> list[BackupRecord]:
    records = sorted(backups, key=lambda b: (b.database, b.taken_at, b.key))
    naive = [b.key for b in records if b.taken_at.utcoffset() is None]
    if now.utcoffset() is None or naive:
        raise ValueError(f"timezone-aware datetimes required (now={now.isoformat()}, naive backups: {naive[:3]})")
    keys = [b.key for b in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate backup keys: {sorted({k for k in keys if keys.count(k) > 1})[:3]}")
    return records


def _refusal(by_db: dict[str, list[BackupRecord]], *, last_run_ok: bool) -> str | None:
    """Why pruning must not run at all, or None."""
    if not last_run_ok:
        return "tonight's backup failed or is unverified: nothing is pruned until a night succeeds"
    if not by_db:
        return "no published backup was listed: nothing is pruned (a failed listing must not look like orphans)"
    unverified = sorted(db for db, items in by_db.items() if not items[-1].verified)
    if unverified:
        return f"the newest backup of {', '.join(unverified)} is not verified: nothing is pruned"
    return None


def _keep_reasons(items: list[BackupRecord], policy: RetentionPolicy, now: datetime, tz: tzinfo) -> dict[str, str]:
    """Backups of one database (oldest first) to keep, each with the first rule that keeps it."""
    verified = [b for b in items if b.verified]
    kept: dict[str, str] = {}
    if verified:
        kept[verified[-1].key] = "newest verified"
    cutoff = now - timedelta(days=policy.days)
    for b in items:
        if b.taken_at > cutoff:
            kept.setdefault(b.key, f"within {policy.days} days")
    for kind in TIERS:
        kept.update(_gfs_picks(verified, kind, getattr(policy, kind), tz, kept))
    return kept


def _gfs_picks(verified: list[BackupRecord], kind: str, count: int, tz: tzinfo,
               kept: Collection[str]) -> dict[str, str]:
    """Newest verified backup of each bucket, newest buckets first; already-kept ones use up the bucket only."""
    picks: dict[str, str] = {}
    seen: set[str] = set()
    for b in reversed(verified):
        if len(picks) >= count:
            break
        label = bucket(kind, b.taken_at, tz)
        if label in seen:
            continue
        seen.add(label)
        if b.key not in kept:
            picks[b.key] = f"{kind} {label}"
    return picks


def _delete_reason(b: BackupRecord, policy: RetentionPolicy) -> str:
    if not b.verified:
        return f"older than {policy.days} days and unverified"
    return f"older than {policy.days} days, no daily/weekly/monthly slot"


def _delete_keys(records: list[BackupRecord], keep: tuple[BackupRecord, ...], delete: tuple[BackupRecord, ...],
                 all_objects: Iterable[str]) -> tuple[str, ...]:
    """Deleted backups' keys and objects, plus orphans; never a key a retained backup owns or references."""
    protected = set().union(*(b.objects | b.data_keys for b in keep))
    referenced = set().union(*(b.objects for b in records))
    doomed = set().union(*(b.objects | b.data_keys for b in delete)) | (set(all_objects) - referenced)
    return tuple(sorted(doomed - protected))


def render_plan(plan: RetentionPlan) -> list[dict[str, Any]]:
    """Rows for the run artifact's table, one per backup, sorted by database then time."""
    doomed = {b.key for b in plan.delete}
    ordered = sorted((*plan.keep, *plan.delete), key=lambda b: (b.database, b.taken_at, b.key))
    return [{"key": b.key, "database": b.database, "taken_at": b.taken_at.isoformat(), "verified": b.verified,
             "action": "delete" if b.key in doomed else "keep", "reason": plan.reasons.get(b.key, "")}
            for b in ordered]
