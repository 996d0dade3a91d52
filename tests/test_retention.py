"""The retention planner as a pure function: explicit cases, then 500 seeded generated histories.

hypothesis is not a dependency of the project, so histories come from a seeded `random.Random` (one seed per
case; a failure names its seed and replays exactly).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from odoo_stack_ops.backup.retention import (
    TIERS,
    BackupRecord,
    RetentionPolicy,
    bucket,
    plan_retention,
    render_plan,
)

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)  # a Wednesday
SGT = ZoneInfo("Asia/Singapore")


def record(db: str, taken: datetime, verified: bool = True, objects: frozenset[str] = frozenset()) -> BackupRecord:
    key = f"p/manifests/{db}/{taken.astimezone(UTC):%Y%m%dT%H%M%SZ}.json"
    return BackupRecord(key, db, taken, verified, objects,
                        frozenset({key, key.replace("manifests", "db") + ".dump.zst", key + ".filestore"}))


def nightly(n: int, db: str = "odoo_core", verified=lambda i: True, objects=lambda i: frozenset(), end=NOW):
    """n nights, oldest first, the last one hour before `end`."""
    return [record(db, end - timedelta(days=n - 1 - i, hours=1), verified(i), objects(i)) for i in range(n)]


def keys(items) -> list[str]:
    return [b.key for b in items]


# ---------------------------------------------------------------- explicit cases

def test_35_nights_keep_30_delete_5():
    history = nightly(35)
    plan = plan_retention(history, RetentionPolicy(days=30), NOW, last_run_ok=True)
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
    plan = plan_retention(history, RetentionPolicy(days=30), NOW, last_run_ok=False, all_objects={"p/objects/x"})
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
    plan = plan_retention([], RetentionPolicy(), NOW, last_run_ok=True, all_objects={"p/objects/a"})
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
    shared, only_old, orphan = "p/objects/aa/aa11", "p/objects/bb/bb22", "p/objects/cc/cc33"
    history = nightly(35, objects=lambda i: frozenset({shared} | ({only_old} if i < 5 else set())))
    plan = plan_retention(history, RetentionPolicy(days=30), NOW, last_run_ok=True,
                          all_objects={shared, only_old, orphan})
    assert shared not in plan.delete_keys
    assert only_old in plan.delete_keys and orphan in plan.delete_keys
    assert list(plan.delete_keys) == sorted(plan.delete_keys)


def test_object_referenced_by_a_deleted_and_a_kept_night_stays():
    history = nightly(35, objects=lambda i: frozenset({"p/objects/x"}) if i in (0, 30) else frozenset())
    plan = plan_retention(history, RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert history[0] in plan.delete and "p/objects/x" not in plan.delete_keys


def test_databases_planned_apart_but_objects_shared():
    core = nightly(40, "odoo_core", objects=lambda i: frozenset({"o/x"}) if i < 5 else frozenset())
    dev = nightly(2, "odoo_dev", objects=lambda i: frozenset({"o/x"}), end=NOW - timedelta(days=60))
    plan = plan_retention(core + dev, RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert dev[1] in plan.keep and dev[0] in plan.delete  # odoo_dev keeps its newest verified, however old
    assert all(b in plan.delete for b in core[:10])
    assert "o/x" not in plan.delete_keys  # still referenced by odoo_dev's kept backup


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


# ---------------------------------------------------------------- generated histories

POOL = [f"p/objects/{i:02x}/{i:040x}" for i in range(40)]
ORPHAN = "p/objects/ff/orphan-of-a-crashed-night"


def random_history(rnd: random.Random, now: datetime) -> list[BackupRecord]:
    out = []
    for db in rnd.sample(["odoo_core", "odoo_dev"], rnd.randint(1, 2)):
        taken = now - timedelta(hours=rnd.uniform(0.5, 80))
        window = rnd.randint(0, 30)  # objects drift slowly, so nights share most of them
        for n in range(rnd.randint(1, 120)):
            verified = (n == 0 and rnd.random() < 0.9) or (n > 0 and rnd.random() < 0.8)
            objects = frozenset(o for o in POOL[window:window + 10] if rnd.random() < 0.7)
            out.append(record(db, taken, verified, objects))
            window = max(0, min(30, window + rnd.choice([-1, 0, 0, 1])))
            taken -= timedelta(hours=rnd.choice([3, 24, 24, 24, 24, 25, 48, 24 * 9]) + rnd.uniform(0, 2))
    return out


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
    all_objects = {*POOL, ORPHAN}
    plan = plan_retention(history, policy, now, last_run_ok=ok, all_objects=all_objects, tz=tz)

    assert sorted(keys(plan.keep) + keys(plan.delete)) == sorted(keys(history))
    assert plan.reasons.keys() == set(keys(history))
    assert list(plan.delete_keys) == sorted(set(plan.delete_keys))
    assert plan == plan_retention(rnd.sample(history, len(history)), policy, now, last_run_ok=ok,
                                  all_objects=sorted(all_objects, reverse=True), tz=tz)  # order-independent
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

    protected = set().union(*(b.objects | b.data_keys for b in plan.keep))
    assert not protected & set(plan.delete_keys)  # nothing a kept backup owns or references
    owned_by_deleted = set().union(*(b.objects | b.data_keys for b in plan.delete))
    unreferenced = all_objects - set().union(*(b.objects for b in history))
    assert set(plan.delete_keys) == (owned_by_deleted | unreferenced) - protected
    assert ORPHAN in plan.delete_keys

    remaining = all_objects - set(plan.delete_keys)
    again = plan_retention(plan.keep, policy, now, last_run_ok=True, all_objects=remaining, tz=tz)
    assert again.keep == plan.keep and again.delete == () and again.delete_keys == ()  # idempotent
