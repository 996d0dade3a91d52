"""The retention planner as a pure function: explicit cases, the grace rule, then 500 seeded generated histories.

hypothesis is not a dependency of the project, so histories come from a seeded `random.Random` (one seed per
case; a failure names its seed and replays exactly).
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from odoo_stack_ops.backup import layout
from odoo_stack_ops.backup.filestore import StoredFile, encode_manifest
from odoo_stack_ops.backup.prune import manifest_digests
from odoo_stack_ops.backup.retention import (
    TIERS,
    BackupRecord,
    Listed,
    RetentionPolicy,
    bucket,
    parse_object_key,
    plan_retention,
    render_plan,
)
from odoo_stack_ops.backup.verify import drop_stale_scratch, scratch_name, stale_scratch

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # a Wednesday
SGT = ZoneInfo("Asia/Singapore")
GRACE = timedelta(hours=48)


def obj(n: int, tag: str | None = None) -> str:
    """The key of a filestore object; `n` names its content."""
    digest = hashlib.sha1(str(n).encode(), usedforsecurity=False).hexdigest()
    return layout.object_key("p", "sha1", digest, tag)


def digests(keys) -> list[tuple[str, str]]:
    return [parse_object_key(k)[:2] for k in keys]


class History(list):
    """Records plus what the bucket holds: each record's filestore manifest lists its objects."""

    def __init__(self, records=(), refs=None):
        super().__init__(records)
        self.refs = dict(refs or {})

    def __add__(self, other):
        return History([*self, *other], {**self.refs, **getattr(other, "refs", {})})

    def listing(self, modified=None):
        """Every record's dump and filestore manifest, modified when it was taken (or `modified`)."""
        return [Listed(k, modified or b.taken_at) for b in self for k in sorted(b.data_keys) if "/manifests/" not in k]

    def objects(self, extra=(), modified=NOW - timedelta(days=400)):
        keys = sorted({k for fs in self.refs.values() for k in fs} | set(extra))
        return [Listed(k, modified) for k in keys]

    def references(self, key):
        return digests(self.refs[key])


def record(db: str, taken: datetime, verified: bool = True, objects=frozenset(), history: History | None = None,
           tag: str | None = None) -> BackupRecord:
    st = layout.stamp(taken)
    key, fs = layout.manifest_key("p", db, st), layout.filestore_manifest_key("p", db, st)
    if history is not None:
        history.refs[fs] = frozenset(objects)
    return BackupRecord(key, db, taken, verified, frozenset({key, layout.dump_key("p", db, st), fs}), fs, tag)


def nightly(n: int, db: str = "odoo_core", verified=lambda i: True, objects=lambda i: frozenset(), end=NOW):
    """n nights, oldest first, the last one hour before `end`."""
    history = History()
    history.extend(record(db, end - timedelta(days=n - 1 - i, hours=1), verified(i), objects(i), history)
                   for i in range(n))
    return history


def plan_of(history: History, policy=None, now=NOW, extra=(), **kw):
    """The plan with the bucket as the history left it (every key as old as its night, objects 400 days)."""
    kw.setdefault("listing", history.listing())
    kw.setdefault("objects", history.objects(extra))
    return plan_retention(history, policy or RetentionPolicy(days=30), now, last_run_ok=kw.pop("last_run_ok", True),
                          references=history.references, **kw)


def keys(items) -> list[str]:
    return [b.key for b in items]


# ---------------------------------------------------------------- explicit cases

def test_35_nights_keep_30_delete_5():
    history = nightly(35)
    plan = plan_of(history)
    assert plan.skipped is None
    assert keys(plan.keep) == keys(history[5:]) and keys(plan.delete) == keys(history[:5])
    assert set(plan.delete_keys) == set().union(*(b.data_keys for b in history[:5]))  # 3 keys each
    assert len(plan.delete_keys) == 15
    assert plan.reasons[history[5].key] == "within 30 days"
    assert plan.reasons[history[0].key] == "older than 30 days, no daily/weekly/monthly slot"


def test_weekly_4_keeps_4_extra_sundays():
    history = nightly(90)
    plan = plan_retention(history, RetentionPolicy(days=30, weekly=4), NOW, last_run_ok=True)
    extra = [b for b in plan.keep if b.taken_at <= NOW - timedelta(days=30)]
    assert len(plan.keep) == 34
    # The window ends on Mon 2026-10-26 (week 44 is used up by the window); the 4 weeklies are the Sundays before.
    assert [b.taken_at.date().isoformat() for b in extra] == ["2026-10-04", "2026-10-11", "2026-10-18", "2026-10-25"]
    assert [plan.reasons[b.key] for b in extra] == ["weekly 2026-W40", "weekly 2026-W41", "weekly 2026-W42",
                                                    "weekly 2026-W43"]


def test_gfs_tiers_do_not_double_count():
    history = nightly(400)
    plan = plan_retention(history, RetentionPolicy(days=7, daily=3, weekly=2, monthly=3), NOW, last_run_ok=True)
    by_reason = [plan.reasons[b.key].split()[0] for b in plan.keep]
    assert by_reason.count("within") + by_reason.count("newest") == 7
    assert by_reason.count("daily") == 3 and by_reason.count("weekly") == 2 and by_reason.count("monthly") == 3
    assert len(plan.keep) == 15


def test_monthly_keeps_newest_verified_of_each_month():
    history = nightly(200, verified=lambda i: i % 3 != 0)  # newest (i=199) verified
    plan = plan_retention(history, RetentionPolicy(days=7, monthly=5), NOW, last_run_ok=True)
    monthly = [b for b in plan.keep if plan.reasons[b.key].startswith("monthly")]
    assert len(monthly) == 5
    for b in monthly:
        month = [x for x in history if x.verified and x.taken_at.strftime("%Y-%m") == b.taken_at.strftime("%Y-%m")]
        assert b.taken_at == max(x.taken_at for x in month)


def test_daily_picks_newest_verified_of_a_day_with_reruns():
    old = NOW - timedelta(days=40)
    first, rerun, failed_rerun = (record("odoo_core", old.replace(hour=h), verified=v)
                                  for h, v in ((2, True), (9, True), (11, False)))
    recent = nightly(3)
    plan = plan_retention([first, rerun, failed_rerun, *recent], RetentionPolicy(days=30, daily=4), NOW,
                          last_run_ok=True)
    assert rerun in plan.keep and plan.reasons[rerun.key] == f"daily {old.date().isoformat()}"
    assert first in plan.delete and failed_rerun in plan.delete
    assert plan.reasons[failed_rerun.key] == "older than 30 days and unverified"


def test_failed_night_prunes_nothing():
    history = nightly(40)
    plan = plan_of(history, last_run_ok=False, extra={obj(1)})
    assert plan.delete == () and plan.delete_keys == () and "failed" in plan.skipped
    assert keys(plan.keep) == keys(history)
    assert {r["action"] for r in render_plan(plan)} == {"keep"}


def test_unverified_newest_of_any_database_prunes_nothing():
    core = nightly(40)
    dev = nightly(40, "odoo_dev", verified=lambda i: i != 39)
    plan = plan_retention(core + dev, RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert plan.delete == () and plan.delete_keys == ()
    assert plan.skipped == "the newest backup of odoo_dev is not verified: nothing is pruned"


def test_empty_listing_prunes_nothing_not_even_orphans():
    plan = plan_retention([], RetentionPolicy(), NOW, last_run_ok=True, objects=[Listed(obj(1), NOW - GRACE * 9)])
    assert plan.delete_keys == () and "no published backup" in plan.skipped


def test_newest_verified_survives_any_age_and_unverified_never_counts():
    old = nightly(4, verified=lambda i: i in (0, 3), end=NOW - timedelta(days=100))
    plan = plan_retention(old, RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert keys(plan.keep) == [old[3].key] and plan.reasons[old[3].key] == "newest verified"
    history = [*old[:3], *nightly(2, verified=lambda i: i == 1)]  # newest verified is recent; old[1:3] unverified
    plan = plan_retention(history, RetentionPolicy(days=30, monthly=3), NOW, last_run_ok=True)
    assert old[0] in plan.keep and plan.reasons[old[0].key].startswith("monthly")  # newest VERIFIED of its month
    assert old[1] in plan.delete and old[2] in plan.delete


def test_shared_objects_kept_while_referenced_and_orphans_collected():
    shared, only_old, orphan = obj(0xAA), obj(0xBB), obj(0xCC)
    history = nightly(35, objects=lambda i: frozenset({shared} | ({only_old} if i < 5 else set())))
    plan = plan_of(history, extra={orphan})
    assert shared not in plan.delete_keys
    assert only_old in plan.delete_keys and orphan in plan.delete_keys
    assert list(plan.delete_keys) == sorted(plan.delete_keys)


def test_object_referenced_by_a_deleted_and_a_kept_night_stays():
    history = nightly(35, objects=lambda i: frozenset({obj(1)}) if i in (0, 30) else frozenset())
    plan = plan_of(history)
    assert history[0] in plan.delete and obj(1) not in plan.delete_keys


def test_databases_planned_apart_but_objects_shared():
    core = nightly(40, "odoo_core", objects=lambda i: frozenset({obj(1)}) if i < 5 else frozenset())
    dev = nightly(2, "odoo_dev", objects=lambda i: frozenset({obj(1)}), end=NOW - timedelta(days=60))
    plan = plan_of(core + dev)
    assert dev[1] in plan.keep and dev[0] in plan.delete  # odoo_dev keeps its newest verified, however old
    assert all(b in plan.delete for b in core[:10])
    assert obj(1) not in plan.delete_keys  # still referenced by odoo_dev's kept backup


def test_buckets_follow_the_stack_time_zone():
    taken = datetime(2026, 11, 22, 18, 30, tzinfo=UTC)  # Sunday in UTC, Monday 02:30 in Singapore
    assert bucket("weekly", taken) == "2026-W47" and bucket("weekly", taken, SGT) == "2026-W48"
    assert bucket("daily", taken, SGT) == "2026-11-23"
    assert bucket("monthly", datetime(2026, 10, 31, 17, tzinfo=UTC), SGT) == "2026-11"
    sunday_sgt, monday_sgt = record("db", taken - timedelta(hours=3)), record("db", taken)  # one UTC day
    history = [sunday_sgt, monday_sgt, record("db", NOW - timedelta(hours=1))]
    in_utc = plan_retention(history, RetentionPolicy(days=1, daily=3), NOW, last_run_ok=True)
    in_sgt = plan_retention(history, RetentionPolicy(days=1, daily=3), NOW, last_run_ok=True, tz=SGT)
    assert monday_sgt in in_utc.keep and sunday_sgt in in_utc.delete  # same UTC day: only its newest
    assert monday_sgt in in_sgt.keep and sunday_sgt in in_sgt.keep  # two Singapore days
    assert in_sgt.reasons[sunday_sgt.key] == "daily 2026-11-22"


def test_render_rows():
    plan = plan_retention(nightly(32), RetentionPolicy(days=30), NOW, last_run_ok=True)
    rows = render_plan(plan)
    assert len(rows) == 32 and [r["action"] for r in rows] == ["delete"] * 2 + ["keep"] * 30
    assert set(rows[0]) == {"key", "database", "taken_at", "verified", "action", "reason"}
    assert rows[0]["taken_at"] == (NOW - timedelta(days=31, hours=1)).isoformat()


@pytest.mark.parametrize("bad", [
    lambda: plan_retention(nightly(2), RetentionPolicy(), NOW.replace(tzinfo=None), last_run_ok=True),
    lambda: plan_retention([record("d", NOW.replace(tzinfo=None))], RetentionPolicy(), NOW, last_run_ok=True),
    lambda: plan_retention(nightly(2) + nightly(1), RetentionPolicy(), NOW, last_run_ok=True),
    lambda: RetentionPolicy(weekly=-1),
])
def test_invalid_input_is_refused(bad):
    with pytest.raises(ValueError):
        bad()


# ---------------------------------------------------------------- grace: what a night in flight needs

def test_young_orphans_survive_old_orphans_go():
    history = nightly(3)
    crashed = layout.stamp(NOW - timedelta(days=5))
    old = [Listed(layout.dump_key("p", "odoo_core", crashed), NOW - timedelta(days=5)),
           Listed(layout.filestore_manifest_key("p", "odoo_core", crashed), NOW - timedelta(days=5))]
    young = [Listed(layout.dump_key("p", "odoo_core", "20261125T025000Z"), NOW - timedelta(minutes=10))]
    objects = [Listed(obj(1), NOW - timedelta(days=3)), Listed(obj(2), NOW - timedelta(hours=47)),
               Listed(obj(3), NOW - timedelta(hours=48))]
    history.refs[old[1].key] = frozenset({obj(1)})  # the crashed night's manifest lists its own upload
    plan = plan_of(history, listing=history.listing() + old + young, objects=objects, grace=GRACE)
    assert set(plan.delete_keys) == {old[0].key, old[1].key, obj(1), obj(3)}  # exactly 48 h old is old
    assert plan.spared == 2  # the young dump and obj(2)


def test_old_object_listed_only_by_a_young_unpublished_filestore_manifest_survives():
    # obj(1): uploaded 40 days ago by a night retention deletes now; tonight's (unpublished) night reuses it.
    history = nightly(35, objects=lambda i: frozenset({obj(1), obj(2)}) if i == 0 else frozenset({obj(3)}))
    tonight = layout.filestore_manifest_key("p", "odoo_core", "20261125T025000Z")
    history.refs[tonight] = frozenset({obj(1), obj(3), obj(4)})
    uploading = [Listed(tonight, NOW - timedelta(minutes=5)),
                 Listed(layout.dump_key("p", "odoo_core", "20261125T025000Z"), NOW - timedelta(minutes=20))]
    objects = history.objects(extra={obj(4)})  # all of them 400 days old, even tonight's new obj(4)
    plan = plan_of(history, listing=history.listing() + uploading, objects=objects)
    assert history[0] in plan.delete and history[0].key in plan.delete_keys
    assert obj(2) in plan.delete_keys  # only the deleted night had it
    assert not {obj(1), obj(3), obj(4), *(i.key for i in uploading)} & set(plan.delete_keys)
    # once tonight's filestore manifest is older than grace (the night crashed), its objects are orphans
    stale = [i._replace(modified=NOW - timedelta(days=3)) for i in uploading]
    plan = plan_of(history, listing=history.listing() + stale, objects=objects)
    assert {obj(1), obj(2), obj(4), *(i.key for i in stale)} <= set(plan.delete_keys)
    assert obj(3) not in plan.delete_keys  # kept nights still list it


def test_young_filestore_manifest_protects_its_objects_under_any_tag():
    history = nightly(2, objects=lambda i: frozenset())
    young_fs = layout.filestore_manifest_key("p", "odoo_core", "20261125T025000Z")
    history.refs[young_fs] = frozenset({obj(7)})  # tonight encrypts: its tag is not known before its manifest
    objects = [Listed(obj(7, "ab12cd34"), NOW - timedelta(days=9)), Listed(obj(8, "ab12cd34"), NOW - timedelta(days=9))]
    plan = plan_of(history, listing=[Listed(young_fs, NOW)], objects=objects)
    assert plan.delete_keys == (obj(8, "ab12cd34"),)


def test_a_kept_backup_protects_its_own_tag_only():
    history = History()
    history.append(record("odoo_core", NOW - timedelta(hours=1), True, {obj(5)}, history, tag="newtag01"))
    objects = [Listed(obj(5, "newtag01"), NOW - timedelta(days=9)), Listed(obj(5, "oldtag01"), NOW - timedelta(days=9)),
               Listed(obj(5), NOW - timedelta(days=9))]
    plan = plan_of(history, objects=objects)
    assert set(plan.delete_keys) == {obj(5, "oldtag01"), obj(5)}  # copies for retired recipients go


def test_clock_skew_never_makes_fresh_keys_old():
    history = nightly(2)
    fresh = Listed(obj(1), NOW - timedelta(days=3))  # by the storage clock: 1 hour old (see storage_now)
    future = Listed(obj(2), NOW + timedelta(days=30))  # the storage clock runs ahead of the worker
    stale = Listed(obj(3), NOW - timedelta(days=10))
    skewed = plan_of(history, objects=[fresh, future, stale], storage_now=NOW - timedelta(days=3, hours=-1))
    assert skewed.delete_keys == (obj(3),)
    assert set(plan_of(history, objects=[fresh, future, stale]).delete_keys) == {obj(1), obj(3)}  # clocks agree
    with pytest.raises(ValueError):
        plan_of(history, storage_now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError):
        plan_of(history, grace=timedelta(hours=-1))


def test_keys_it_does_not_understand_are_never_deleted():
    history = nightly(2)
    odd = ["p/objects/sha1/zz/not-a-digest", "p/objects/md5/ab/ab", obj(1)[:-1], obj(1) + ".tag", "p/objects/x"]
    plan = plan_of(history, objects=[Listed(k, NOW - timedelta(days=99)) for k in odd])
    assert plan.delete_keys == ()
    assert parse_object_key(obj(1, "t1")) == ("sha1", obj(1).rsplit("/", 1)[1], "t1")
    assert parse_object_key(layout.object_key("a/b", "sha256", "c" * 64)) == ("sha256", "c" * 64, None)


def test_filestore_manifest_streams_in_any_chunking():
    files = [StoredFile(p, i, 1700000000 + i, "sha1" if i % 2 else "sha256", f"{i:064x}"[-(40 if i % 2 else 64):])
             for i, p in enumerate(['a/b', 'we"ird\\ ü', 'files":[', "x" * 300, "ab/" + "f" * 40])]
    data = encode_manifest("odoo_core", "20261125T020000Z", '/root "files":[1,2]', files)
    want = [(f.algo, f.digest) for f in sorted(files, key=lambda f: f.path)]
    for size in (1, 3, 7, 64, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert list(manifest_digests(chunks)) == want
    with pytest.raises(ValueError):
        list(manifest_digests([data[: len(data) // 2]]))


# ---------------------------------------------------------------- generated histories

POOL = [obj(i) for i in range(40)]
ORPHAN, YOUNG_ORPHAN = obj(0xDEAD), obj(0xBEEF)  # uploads of crashed nights: one long ago, one this morning


def random_history(rnd: random.Random, now: datetime) -> History:
    out = History()
    for db in rnd.sample(["odoo_core", "odoo_dev"], rnd.randint(1, 2)):
        taken = now - timedelta(hours=rnd.uniform(0.5, 80))
        window = rnd.randint(0, 30)  # objects drift slowly, so nights share most of them
        for n in range(rnd.randint(1, 120)):
            verified = (n == 0 and rnd.random() < 0.9) or (n > 0 and rnd.random() < 0.8)
            objects = frozenset(o for o in POOL[window:window + 10] if rnd.random() < 0.7)
            out.append(record(db, taken, verified, objects, out))
            window = max(0, min(30, window + rnd.choice([-1, 0, 0, 1])))
            taken -= timedelta(hours=rnd.choice([3, 24, 24, 24, 24, 25, 48, 24 * 9]) + rnd.uniform(0, 2))
    return out


def in_flight(rnd: random.Random, history: History, now: datetime, grace: timedelta) -> tuple[list[Listed], str]:
    """An unpublished night: its dump and filestore manifest uploaded within grace, reusing old pool objects."""
    fs = layout.filestore_manifest_key("p", "odoo_core", layout.stamp(now))
    history.refs[fs] = frozenset(rnd.sample(POOL, 8))
    made = now - grace * rnd.uniform(0.01, 0.99)
    return [Listed(layout.dump_key("p", "odoo_core", layout.stamp(now)), made), Listed(fs, made)], fs


def expected_keys(plan, history: History, listing, objects, cutoff) -> set[str]:
    """The module docstring's rule, written over key strings (an oracle for the planner's ids)."""
    owned = set().union(*(b.data_keys for b in plan.keep))
    referenced = set().union(*(history.refs[b.filestore_key] for b in plan.keep))
    young_fs = [i.key for i in listing if i.modified > cutoff and i.key not in owned and "/filestore/" in i.key]
    young_digests = {parse_object_key(k)[1] for fs in young_fs for k in history.refs[fs]}
    return ({b.key for b in plan.delete} | {i.key for i in listing if i.key not in owned and i.modified <= cutoff}
            | {i.key for i in objects if i.key not in referenced and i.modified <= cutoff
               and parse_object_key(i.key)[1] not in young_digests})


def check_gfs(plan, history, policy, tz):
    kept = set(keys(plan.keep))
    for db in {b.database for b in history}:
        verified = sorted((b for b in history if b.database == db and b.verified), key=lambda b: b.taken_at)
        for kind in TIERS:
            picks = [b for b in plan.keep if b.database == db and plan.reasons[b.key].startswith(f"{kind} ")]
            assert len(picks) <= getattr(policy, kind)
            newest = {}  # bucket -> newest verified backup of it
            for b in verified:
                newest[bucket(kind, b.taken_at, tz)] = b
            for b in picks:  # sound: a pick is the newest verified of the bucket its reason names
                assert newest[plan.reasons[b.key].split()[1]] == b
            for b in newest.values():  # complete: a bucket is only dropped once the tier's count is used up
                if b.key not in kept:
                    assert len(picks) == getattr(policy, kind)
                    assert all(p.taken_at > b.taken_at for p in picks)


@pytest.mark.parametrize("seed", range(500))
def test_generated_histories_hold_the_invariants(seed):
    rnd = random.Random(seed)
    now = NOW + timedelta(hours=rnd.uniform(0, 24 * 40))
    history = random_history(rnd, now)
    policy = RetentionPolicy(days=rnd.choice([0, 1, 7, 30, 30]), daily=rnd.randint(0, 8), weekly=rnd.randint(0, 6),
                             monthly=rnd.randint(0, 4))
    tz = rnd.choice([UTC, SGT, ZoneInfo("America/New_York")])
    ok = rnd.random() < 0.85
    grace = timedelta(hours=rnd.choice([1, 48, 48, 24 * 9]))
    flying, flying_fs = in_flight(rnd, history, now, grace) if rnd.random() < 0.5 else ([], None)
    listing = history.listing() + flying
    first_use = {}  # an object was uploaded by the first night that referenced it
    for b in sorted(history, key=lambda b: b.taken_at):
        for k in history.refs[b.filestore_key]:
            first_use.setdefault(k, b.taken_at)
    objects = [Listed(k, first_use.get(k, now - timedelta(days=500))) for k in POOL]
    objects += [Listed(ORPHAN, now - timedelta(days=20)), Listed(YOUNG_ORPHAN, now - timedelta(minutes=30))]

    def planned(records, listing=listing, objects=objects, last_run_ok=ok):
        return plan_retention(records, policy, now, last_run_ok=last_run_ok, listing=listing, objects=objects,
                              references=history.references, grace=grace, tz=tz)

    plan = planned(history)
    assert sorted(keys(plan.keep) + keys(plan.delete)) == sorted(keys(history))
    assert plan.reasons.keys() == set(keys(history))
    assert list(plan.delete_keys) == sorted(set(plan.delete_keys))
    assert plan == planned(rnd.sample(history, len(history)), listing[::-1], objects[::-1])  # order-independent
    dbs = {b.database for b in history}
    newest_unverified = any(not max((b for b in history if b.database == db), key=lambda b: b.taken_at).verified
                            for db in dbs)
    if not ok or newest_unverified:
        assert plan.skipped and plan.delete == () and plan.delete_keys == ()
        return
    assert plan.skipped is None

    for db in dbs:  # the newest verified backup of every database survives
        assert max((b for b in history if b.database == db and b.verified), key=lambda b: b.taken_at) in plan.keep
    cutoff = now - timedelta(days=policy.days)
    assert all(b in plan.keep for b in history if b.taken_at > cutoff)
    assert all(b.taken_at <= cutoff for b in plan.delete)
    assert all(b in plan.delete for b in history if not b.verified and b.taken_at <= cutoff)
    check_gfs(plan, history, policy, tz)

    doomed = set(plan.delete_keys)
    kept = set().union(*(b.data_keys | history.refs[b.filestore_key] for b in plan.keep))
    assert not kept & doomed  # nothing a kept backup owns or references
    young = {i.key for i in [*listing, *objects] if i.modified > now - grace}
    assert not young & doomed  # nothing younger than grace
    if flying_fs:  # the unpublished night keeps everything it will publish
        assert not (history.refs[flying_fs] | {i.key for i in flying}) & doomed, sorted((history.refs[flying_fs] | {i.key for i in flying}) & doomed)
    assert doomed == expected_keys(plan, history, listing, objects, now - grace)
    assert ORPHAN in doomed or ORPHAN in kept or grace > timedelta(days=20)
    assert YOUNG_ORPHAN not in doomed

    again = planned(plan.keep, [i for i in listing if i.key not in doomed], [i for i in objects if i.key not in doomed],
                    True)
    assert again.keep == plan.keep and again.delete == () and again.delete_keys == ()  # idempotent


# ---------------------------------------------------------------- scratch databases and names (pure)

def test_scratch_names_carry_the_stack_and_fit_postgres():
    name = scratch_name("odoo_core", "20261125T020000Z", "odoo-erp-prod")
    assert re.fullmatch(r"verify_[0-9a-f]{10}_20261125t020000z_odoo_core", name)
    assert name != scratch_name("odoo_core", "20261125T020000Z", "odoo-erp-staging")
    long_db = "a_database_name_that_is_far_too_long_to_fit_after_the_prefix_x"
    one, two = scratch_name(long_db, "20261125T020000Z", "s" * 500), scratch_name(long_db + "y", "20261125T020000Z", "s")
    assert len(one) <= 63 and len(two) <= 63 and one[-9:] != two[-9:]
    assert scratch_name("odoo_core", "20261125T020000Z") == "verify_odoo_core_20261125t020000z"  # untagged, as before
    for bad in [("odoo core", "20261125T020000Z", "s"), ("odoo_core", "yesterday", "s")]:
        with pytest.raises(ValueError):
            scratch_name(*bad)


def test_stale_scratch_is_this_stacks_old_unused_ones():
    now = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    mine_old, mine_busy = (scratch_name("odoo_core", st, "prod") for st in ("20261120T020000Z", "20261121T020000Z"))
    mine_fresh = scratch_name("odoo_core", "20261125T020000Z", "prod")
    theirs_old = scratch_name("odoo_core", "20261120T020000Z", "staging")
    legacy_old, legacy_fresh = "verify_odoo_core_20261120t020000z", "verify_odoo_core_20261125t020000z"
    names = [mine_old, mine_busy, mine_fresh, theirs_old, legacy_old, legacy_fresh, "verify_notes", "odoo_core"]
    grace = timedelta(hours=48)
    assert stale_scratch(names, {mine_busy}, stack="prod", now=now, older_than=grace) == [mine_old]
    assert stale_scratch(names, set(), stack="staging", now=now, older_than=grace) == [theirs_old]
    assert stale_scratch(names, set(), stack=None, now=now, older_than=grace) == [legacy_old]


# ---------------------------------------------------------------- against PostgreSQL and S3

@pytest.mark.integration
def test_drop_stale_scratch_spares_other_stacks_fresh_and_busy_databases(pg):
    server = pg.database_config("postgres")
    now = datetime.now(UTC)
    old, fresh = layout.stamp(now - timedelta(days=3)), layout.stamp(now - timedelta(minutes=5))
    mine_stale, mine_busy, mine_fresh, theirs = (
        scratch_name("odoo_core", old, "gc-test-prod"), scratch_name("odoo_dev", old, "gc-test-prod"),
        scratch_name("odoo_core", fresh, "gc-test-prod"), scratch_name("odoo_core", old, "gc-test-other"))
    for name in (mine_stale, mine_busy, mine_fresh, theirs):
        pg.createdb(name)
    try:
        with psycopg.connect(**pg.conninfo(mine_busy)):  # a run restoring into it right now
            dropped = drop_stale_scratch(server, "gc-test-prod", older_than=timedelta(hours=48))
        assert dropped == [mine_stale]
        left = {r[0] for r in pg.execute("SELECT datname FROM pg_database WHERE datname LIKE 'verify%'")}
        assert {mine_busy, mine_fresh, theirs} <= left and mine_stale not in left
    finally:
        for name in (mine_stale, mine_busy, mine_fresh, theirs):
            pg.dropdb(name)


def night(pg, s3, bucket, root: Path, st: str, *, publish: bool = True, recipients: list[str] | None = None) -> dict:
    """A backup of `gc_src` (PostgreSQL) and `root` (a local filestore) to S3, with the night's own functions;
    publish=False stops after the filestore manifest, as a night still verifying would. With `recipients` the
    filestore's blobs are encrypted (the dump is not: these tests are about keys, not bytes)."""
    from odoo_stack_ops.backup import crypto, spaces
    from odoo_stack_ops.backup import database as dbleg
    from odoo_stack_ops.backup import filestore as fs
    from odoo_stack_ops.backup import manifest as mf
    from odoo_stack_ops.executors.local import LocalExecutor

    server = pg.database_config("gc_src")
    fs_keys = sorted(o["Key"] for o in spaces.iter_objects(s3, bucket, "p/filestore/gc_src/"))
    tag = crypto.object_tag(recipients) if recipients else None
    encrypt = crypto.file_encryptor(recipients) if recipients else None
    previous = fs.read_previous(s3, bucket, fs_keys[-1] if fs_keys else None, tag)
    with dbleg.exported_snapshot(server, "gc_src") as (snapshot, facts):
        dump = dbleg.dump_to_spaces(LocalExecutor(), server, "gc_src", snapshot, s3=s3, bucket=bucket,
                                    key=layout.dump_key("p", "gc_src", st), pg_dump_version="test")
    files, stats = fs.backup_filestore(LocalExecutor(), str(root), s3=s3, bucket=bucket, prefix="p",
                                       database="gc_src", st=st, previous=previous, encrypt=encrypt)
    fs_key = layout.filestore_manifest_key("p", "gc_src", st)
    spaces.put_bytes(s3, bucket, fs_key, fs.encode_manifest("gc_src", st, str(root), files, tag))
    t = layout.parse_stamp(st)
    doc = mf.build_manifest(stack="gc-test", database="gc_src", st=st, started_at=t, finished_at=t,
                            facts=facts.as_dict(), dump=mf.DumpRecord(**dump.as_dict()),
                            filestore=mf.FilestoreRecord(manifest_key=fs_key, **stats.__dict__),
                            verification=mf.Verification(ok=True),
                            encryption=mf.Encryption(**crypto.encryption_record(recipients)) if recipients else None)
    if publish:
        spaces.put_bytes(s3, bucket, layout.manifest_key("p", "gc_src", st), mf.encode(doc), "application/json")
    return doc


def write_files(root: Path, contents: list[bytes]) -> None:
    for data in contents:
        sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        (root / sha[:2]).mkdir(parents=True, exist_ok=True)
        (root / sha[:2] / sha).write_bytes(data)


@pytest.mark.integration
def test_retention_while_a_night_waits_to_publish_leaves_it_whole(pg, s3, bucket, tmp_path):
    """Old night A (deleted by policy), B (kept), X (crashed after its filestore manifest: never published);
    night C, whose newest filestore manifest is X's, points at X's pack for `shared` without uploading it again
    and uploads its dump, new pack and filestore manifest; retention runs before C publishes."""
    from odoo_stack_ops.backup import prune, restore, spaces
    from odoo_stack_ops.executors.local import LocalExecutor

    client = s3.client()
    store = spaces.Bucket(client, bucket, "p")
    pg.createdb("gc_src")
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, md5(g::text) "
               "FROM generate_series(1, 500) g", "gc_src")
    root = tmp_path / "filestore"
    shared, only_a, b_only, c_new = b"shared by X and C", b"only night A had this", b"B's", b"C's new file"
    now = datetime.now(UTC)
    st_a, st_b, st_x, st_c = (layout.stamp(now - timedelta(hours=h)) for h in (40 * 24, 24, 12, 0))

    def only(contents: list[bytes]) -> None:
        shutil.rmtree(root, ignore_errors=True)
        write_files(root, contents)

    def packs(doc) -> set[str]:
        return {layout.pack_key("p", f.pack) for f in restore.filestore_files(store, doc)}

    try:
        only([only_a])
        pack_a = packs(night(pg, client, bucket, root, st_a))
        only([b_only])
        night(pg, client, bucket, root, st_b)  # B: the newest verified backup
        only([shared])
        pack_x = packs(night(pg, client, bucket, root, st_x, publish=False))  # X crashed before publishing
        only([shared, c_new])
        time.sleep(4)
        c_started = time.monotonic()
        doc_c = night(pg, client, bucket, root, st_c, publish=False)
        assert pack_x < packs(doc_c) and doc_c.filestore.new_objects == 1  # `shared` was not uploaded again
        # grace: longer than C has been running, shorter than A's, B's and X's age (S3 dates are whole seconds)
        grace = timedelta(seconds=time.monotonic() - c_started + 2)
        plan = prune.plan(client, bucket, "p", RetentionPolicy(days=30), datetime.now(UTC), last_run_ok=True,
                          tz="UTC", grace=grace)
        assert [b.key for b in plan.delete] == [layout.manifest_key("p", "gc_src", st_a)]
        assert pack_a <= set(plan.delete_keys)  # old and only A's: collected
        assert layout.dump_key("p", "gc_src", st_a) in plan.delete_keys
        assert layout.filestore_manifest_key("p", "gc_src", st_x) in plan.delete_keys  # X's orphans go...
        assert not pack_x & set(plan.delete_keys)  # ...but not the pack C points at
        prune.apply(client, bucket, plan)

        spaces.put_bytes(client, bucket, layout.manifest_key("p", "gc_src", st_c), mf_encode(doc_c))
        present = {o["Key"] for o in spaces.iter_objects(client, bucket, "p/")}
        files = restore.filestore_files(store, doc_c)
        assert {doc_c.dump.key, doc_c.filestore.manifest_key} | packs(doc_c) <= present
        assert not pack_a & present

        dump_file = tmp_path / "c.dump"
        restore.fetch_dump(restore.dump_chunks(store, doc_c.dump), dump_file)  # checks both SHA-256s
        server = pg.database_config("postgres")
        copy, _ = restore.restore_copy(LocalExecutor(), server, "gc_restored", st_c, dump_file)
        restore.swap_in(server, "gc_restored", copy, st_c)
        assert pg.execute("SELECT count(*), sum(length(note)) FROM t", "gc_restored") == [(500, 16000)]
        root = restore.restore_filestore(LocalExecutor(), str(tmp_path / "data"), "restored",
                                         restore.object_members(store, files))  # hash-checked
        assert sorted(p.read_bytes() for p in Path(root).rglob("*") if p.is_file()) == sorted([shared, c_new])
    finally:
        pg.dropdb("gc_restored")
        pg.dropdb("gc_src")


def sparse_bed(pg, s3, bucket, encrypted: bool):
    """For the repacking tests: `gc_src` created, the bucket's client and store (prefix p), an age identity and the
    recipients (None when plain), ten random files, the stamps of nights 40 days old, a day old and now, and
    `packs(doc)`: the pack keys a published backup points at."""
    import pyrage

    from odoo_stack_ops.backup import restore, spaces

    client = s3.client()
    store = spaces.Bucket(client, bucket, "p")
    identity = pyrage.x25519.Identity.generate()
    pg.createdb("gc_src")
    pg.execute("CREATE TABLE t (id int PRIMARY KEY)", "gc_src")
    now = datetime.now(UTC)

    def packs(doc) -> set[str]:
        return {layout.pack_key("p", f.pack) for f in restore.filestore_files(store, doc)}

    return (client, store, identity, [str(identity.to_public())] if encrypted else None,
            [random.randbytes(3000) for _ in range(10)],
            tuple(layout.stamp(now - timedelta(hours=h)) for h in (40 * 24, 24, 0)), packs)


@pytest.mark.integration
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_pack_mostly_of_deleted_files_is_packed_again_and_collected_once_its_old_backups_expire(
        pg, s3, bucket, tmp_path, encrypted):
    """Night A (40 days old) packs ten files; Odoo then deletes nine. Night B (yesterday) reads the tenth again
    into a new pack instead of pointing at A's, night C (tonight) reads nothing, and retention deletes A with its
    pack. Without repacking, B and C would keep A's nine deleted files in Spaces for as long as the tenth lives."""
    from odoo_stack_ops.backup import prune, restore, spaces

    client, store, identity, recipients, contents, (st_a, st_b, st_c), packs = sparse_bed(pg, s3, bucket, encrypted)
    root = tmp_path / "filestore"
    kept = contents[3]

    try:
        write_files(root, contents)
        doc_a = night(pg, client, bucket, root, st_a, recipients=recipients)
        pack_a = packs(doc_a)
        assert len(pack_a) == 1 and doc_a.filestore.repacked_files == 0
        shutil.rmtree(root)
        write_files(root, [kept])  # Odoo's attachment GC removed the other nine
        doc_b = night(pg, client, bucket, root, st_b, recipients=recipients)
        assert (doc_b.filestore.read_files, doc_b.filestore.repacked_files, doc_b.filestore.repacked_bytes) == (
            1, 1, len(kept))
        assert not packs(doc_b) & pack_a
        doc_c = night(pg, client, bucket, root, st_c, recipients=recipients)  # a dense pack is left alone
        assert (doc_c.filestore.read_files, doc_c.filestore.packs) == (0, 0) and packs(doc_c) == packs(doc_b)

        plan = prune.plan(client, bucket, "p", RetentionPolicy(days=30), datetime.now(UTC), last_run_ok=True,
                          tz="UTC", grace=timedelta(0))
        assert [b.key for b in plan.delete] == [layout.manifest_key("p", "gc_src", st_a)]
        assert pack_a <= set(plan.delete_keys)
        assert not packs(doc_b) & set(plan.delete_keys)
        prune.apply(client, bucket, plan)
        present = {o["Key"] for o in spaces.iter_objects(client, bucket, "p/packs/")}
        assert present == packs(doc_c)

        decrypt = restore.decryptor_for(doc_c, str(identity))
        got = [b"".join(chunks) for _path, _size, _mtime, chunks in restore.object_members(
            store, restore.filestore_files(store, doc_c), decrypt, doc_c.object_tag)]
        assert got == [kept]  # hash-checked on the way
    finally:
        pg.dropdb("gc_src")


@pytest.mark.integration
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_night_killed_after_its_new_pack_leaves_an_orphan_that_retention_collects_and_the_next_night_packs_again(
        pg, s3, bucket, tmp_path, encrypted):
    """Night A (40 days old) packs ten files; Odoo deletes nine. Night B is killed right after it stored the new
    pack holding the tenth (no filestore manifest, nothing published). Night C packs the tenth again (A's pack is
    still sparse) and publishes; retention then deletes A, A's pack and B's orphan pack, and C restores whole."""
    from odoo_stack_ops.backup import crypto, prune, restore, spaces
    from odoo_stack_ops.backup import filestore as fs
    from odoo_stack_ops.executors.local import LocalExecutor

    client, store, identity, recipients, contents, (st_a, st_b, st_c), packs = sparse_bed(pg, s3, bucket, encrypted)
    root = tmp_path / "filestore"
    kept = contents[6]

    def stored_packs() -> set[str]:
        return {o["Key"] for o in spaces.iter_objects(client, bucket, "p/packs/")}

    try:
        write_files(root, contents)
        pack_a = packs(night(pg, client, bucket, root, st_a, recipients=recipients))
        shutil.rmtree(root)
        write_files(root, [kept])
        previous = fs.read_previous(client, bucket, layout.filestore_manifest_key("p", "gc_src", st_a),
                                    crypto.object_tag(recipients) if recipients else None)
        _, killed = fs.backup_filestore(LocalExecutor(), str(root), s3=client, bucket=bucket, prefix="p",
                                        database="gc_src", st=st_b, previous=previous,
                                        encrypt=crypto.file_encryptor(recipients) if recipients else None)
        orphan = stored_packs() - pack_a  # what night B left when it was killed: its pack, nothing pointing at it
        assert killed.repacked_files == 1 and len(orphan) == 1
        doc_c = night(pg, client, bucket, root, st_c, recipients=recipients)
        assert doc_c.filestore.repacked_files == 1 and not packs(doc_c) & (pack_a | orphan)

        plan = prune.plan(client, bucket, "p", RetentionPolicy(days=30), datetime.now(UTC), last_run_ok=True,
                          tz="UTC", grace=timedelta(0))
        assert [b.key for b in plan.delete] == [layout.manifest_key("p", "gc_src", st_a)]
        assert pack_a | orphan <= set(plan.delete_keys) and not packs(doc_c) & set(plan.delete_keys)
        prune.apply(client, bucket, plan)
        assert stored_packs() == packs(doc_c)
        decrypt = restore.decryptor_for(doc_c, str(identity))
        got = [b"".join(chunks) for _path, _size, _mtime, chunks in restore.object_members(
            store, restore.filestore_files(store, doc_c), decrypt, doc_c.object_tag)]
        assert got == [kept]
    finally:
        pg.dropdb("gc_src")


def mf_encode(doc: dict) -> bytes:
    from odoo_stack_ops.backup import manifest as mf

    return mf.encode(doc)
