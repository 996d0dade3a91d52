"""Retention planning (pure): which published backups and which keys of the bucket to delete, and why.

Backups, per database:
- keep every backup younger than `days` (an absolute age, independent of the time zone);
- never delete the newest *verified* backup, whatever its age: it is the last proven restore point;
- GFS, as borg prune counts it: walking verified backups newest first, keep the newest of each of the last
  `daily` days / `weekly` ISO weeks / `monthly` months, where a bucket whose newest is already kept by an
  earlier rule (window, newest verified, a finer tier) is used up without counting; so `days=30, weekly=4`
  keeps four weeklies beyond the window. Buckets are calendar days/weeks/months in `tz`;
- unverified backups outside the window are deleted: they are not restore points.

Pruning is refused entirely (nothing deleted, `skipped` says why) after a failed or unverified night, when
the newest backup of any database is unverified, or when no backup is listed at all.

Keys (garbage collection). A deleted backup's manifest is deleted: that is the policy's verdict, and from
then on the backup does not exist. Every other key (dumps, filestore manifests, packs and the earlier format's
per-file objects -- "objects" below) is deleted only when
it is listed, no kept backup owns or references it, and it is older than the grace period, measured from its
LastModified. Grace exists because publishing is not atomic across keys: a writer uploads its dump, new
objects and filestore manifest, and only then its manifest; until then its keys are referenced by nothing
published. The rule, in full -- a listed key survives when any of these holds:

1. a kept backup owns it (manifest, dump, filestore manifest) or its filestore manifest references it;
2. it was modified less than `grace` ago (a night in flight, or one that just published);
3. it is an object referenced by a filestore manifest modified less than `grace` ago, published or not.
   Objects are content-addressed and shared: a new night does not re-upload an object the bucket holds, so
   an in-flight night refers to OLD objects (maybe owned only by a backup deleted right now, or orphans of a
   crashed night) through its filestore manifest, which it uploads before its manifest. Such a manifest's
   objects are protected whatever their tag (an unpublished night's encryption tag is not known yet);
4. its key is not one this planner understands (not shaped `objects/{algo}/{xx}/{digest}[.tag.age]` or
   `packs/{xx}/{id}`).

A pack holds blobs of many files and lives as long as any kept or young filestore manifest references it; the
blobs in it that no kept backup needs any more are not reclaimed until the whole pack goes. A night stops
pointing at a pack it needs less than half of (`filestore.sparse_packs`: it packs those files again), so such
a pack goes once the backups that still point at it expire.

So orphans -- dumps, filestore manifests and objects of crashed nights -- are collected once older than
grace, and a deleted backup's dump and objects follow the same rule. Ages are measured against the earlier of
the worker's clock (`now`) and the storage's (`storage_now`, the listing's Date header), so a worker clock
running ahead cannot make fresh keys look old; a key dated in the future is simply young.

Assumption left: a run (listing the bucket to writing its filestore manifest) takes less than `grace`. The
rule cannot see an object a writer has decided to reuse but not yet written into its filestore manifest; if
that object is old and referenced by nothing kept or young, a concurrent retention deletes it. That window
closes only with the writer's help (re-list its objects before publishing, or an in-flight marker).

Memory: object references are kept as 64-bit ids (ints), one set for everything protected; the listing and
the filestore manifests stream through. Two ids that collide can only protect a key, never doom one.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, NamedTuple

TIERS = ("daily", "weekly", "monthly")
GRACE = timedelta(hours=48)
ALGOS = {"sha1": 40, "sha256": 64}
PACK = "pack"  # the "algo" of a pack reference: packs are shared by files, named by a random 64-hex id

# (algo, hex digest) of each file a filestore manifest lists, or (PACK, pack id) for a packed file
References = Callable[[str], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class BackupRecord:
    """One published backup as listed from its manifest: the keys it owns and where its objects are listed."""

    key: str
    database: str
    taken_at: datetime
    verified: bool
    data_keys: frozenset[str] = frozenset()  # its manifest, dump and filestore manifest
    filestore_key: str | None = None
    object_tag: str | None = None  # encryption tag in its object keys (None: plaintext objects)


class Listed(NamedTuple):
    """A key of the bucket listing and when the storage last modified it."""

    key: str
    modified: datetime


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
    spared: int = 0  # unreferenced keys the grace rule left alone (young, or listed by a young filestore manifest)


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
                   listing: Iterable[Listed] = (), objects: Iterable[Listed] = (),
                   references: References | None = None, grace: timedelta = GRACE,
                   storage_now: datetime | None = None, tz: tzinfo = UTC) -> RetentionPlan:
    """Decide what to keep and delete. Deterministic: records sorted by (database, taken_at, key), keys sorted.

    `listing` holds the dumps and filestore manifests, `objects` the filestore objects (consumed once, after
    `listing`, so it can stream); `references(filestore manifest key)` yields its files' (algo, digest).
    Raises ValueError on naive datetimes, duplicate backup keys or a negative grace (the plan would be unsafe).
    """
    records = _sorted_records(backups, now)
    if grace < timedelta(0) or (storage_now is not None and storage_now.utcoffset() is None):
        raise ValueError(f"grace must be >= 0 and storage_now timezone-aware (grace={grace}, {storage_now=})")
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
    cutoff = min(now, storage_now or now) - grace
    doomed, spared = _collect(keep, delete, listing, objects, references or _no_references, cutoff)
    return RetentionPlan(keep, delete, doomed, reasons, None, spared)


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


def _no_references(key: str) -> Iterable[tuple[str, str]]:
    raise ValueError(f"no references given to read filestore manifest {key}")


def is_filestore_manifest(key: str) -> bool:
    """`{prefix}/filestore/{database}/{stamp}.json.zst` (see layout)."""
    return "/filestore/" in key and key.endswith(".json.zst")


def parse_object_key(key: str) -> tuple[str, str, str | None] | None:
    """(algo, digest, tag) of `.../objects/{algo}/{xx}/{digest}[.{tag}.age]`, (PACK, id, None) of
    `.../packs/{xx}/{id}`, None for any other shape (pure)."""
    pack = key.rsplit("/", 3)
    if len(pack) == 4 and pack[1] == "packs":
        ok = len(pack[3]) == 64 and pack[2] == pack[3][:2] and not pack[3].strip("0123456789abcdef")
        return (PACK, pack[3], None) if ok else None
    parts = key.rsplit("/", 4)
    if len(parts) != 5 or parts[1] != "objects" or parts[2] not in ALGOS:
        return None
    algo, shard, name = parts[2], parts[3], parts[4]
    digest, dot, rest = name.partition(".")
    tag = rest.removesuffix(".age") if dot else None
    if (len(digest) != ALGOS[algo] or shard != digest[:2] or (dot and (not rest.endswith(".age") or not tag))
            or digest.strip("0123456789abcdef")):
        return None
    return algo, digest, tag


def digest_id(digest: str) -> int:
    """A 64-bit id of an object's content, whatever its tag: digests are uniform already (pure)."""
    return int(digest[:16], 16)


@lru_cache(maxsize=64)
def _salt(algo: str, tag: str | None) -> int:
    return int.from_bytes(hashlib.blake2b(f"{algo}:{tag or ''}".encode(), digest_size=8).digest(), "big")


def object_id(algo: str, digest: str, tag: str | None) -> int:
    """A 64-bit id of one object key (content, algorithm and encryption tag) (pure)."""
    return digest_id(digest) ^ _salt(algo, tag)


def _collect(keep: tuple[BackupRecord, ...], delete: tuple[BackupRecord, ...], listing: Iterable[Listed],
             objects: Iterable[Listed], references: References, cutoff: datetime) -> tuple[tuple[str, ...], int]:
    """Keys to delete under the module's rule, sorted, and how many unreferenced keys grace spared."""
    owned = set().union(*(b.data_keys for b in keep))
    doomed = [b.key for b in delete]
    spared = 0
    young_filestore: list[str] = []
    for item in listing:
        if item.key in owned:
            continue
        if item.modified > cutoff:
            spared += 1
            if is_filestore_manifest(item.key):
                young_filestore.append(item.key)
        else:
            doomed.append(item.key)
    stream = iter(objects)
    first = next(stream, None)
    if first is None:  # no object listed: no filestore manifest needs reading
        return tuple(sorted(set(doomed))), spared
    protected: set[int] = set()  # object ids of kept backups (their tag known)
    for b in keep:
        if b.filestore_key is not None:
            protected.update(object_id(algo, digest, None if algo == PACK else b.object_tag)
                             for algo, digest in references(b.filestore_key))
    in_flight: set[int] = set()  # content ids of young filestore manifests (any tag)
    for key in sorted(young_filestore):
        in_flight.update(digest_id(digest) for _algo, digest in references(key))
    for item in itertools.chain((first,), stream):
        parsed = parse_object_key(item.key)
        if parsed is None:
            continue
        algo, digest, tag = parsed
        if object_id(algo, digest, tag) in protected:
            continue
        if item.modified > cutoff or digest_id(digest) in in_flight:
            spared += 1
            continue
        doomed.append(item.key)
    return tuple(sorted(set(doomed))), spared


def render_plan(plan: RetentionPlan) -> list[dict[str, Any]]:
    """Rows for the run artifact's table, one per backup, sorted by database then time."""
    doomed = {b.key for b in plan.delete}
    ordered = sorted((*plan.keep, *plan.delete), key=lambda b: (b.database, b.taken_at, b.key))
    return [{"key": b.key, "database": b.database, "taken_at": b.taken_at.isoformat(), "verified": b.verified,
             "action": "delete" if b.key in doomed else "keep", "reason": plan.reasons.get(b.key, "")}
            for b in ordered]
