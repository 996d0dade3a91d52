"""The retention planner as a pure function, on explicit cases and ~500 generated histories."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from odoo_stack_ops.backup.retention import BackupRecord, RetentionPolicy, plan_retention, render_plan

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


def nightly(n: int, db: str = "odoo_core", verified=lambda i: True, objects=lambda i: frozenset(), start=NOW):
    out = []
    for i in range(n):
        taken = start - timedelta(days=n - 1 - i, hours=1)
        key = f"p/manifests/{db}/{taken:%Y%m%dT%H%M%SZ}.json"
        out.append(BackupRecord(key, db, taken, verified(i), objects(i),
                                frozenset({key, key.replace("manifests", "db") + ".dump"})))
    return out


def test_35_nights_keep_30():
    plan = plan_retention(nightly(35), RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert len(plan.keep) == 30 and len(plan.delete) == 5 and plan.skipped is None
    assert all(b.taken_at < NOW - timedelta(days=30) for b in plan.delete)
    assert len(plan.delete_keys) == 10  # manifest + dump of each


def test_weekly_keeps_extra_older_backups():
    plan = plan_retention(nightly(90), RetentionPolicy(days=30, weekly=8), NOW, last_run_ok=True)
    old_kept = [b for b in plan.keep if b.taken_at <= NOW - timedelta(days=30)]
    assert 3 <= len(old_kept) <= 4  # 8 ISO weeks reach about 4 weeks past the 30-day window
    assert all(plan.reasons[b.key].startswith("weekly") for b in old_kept)


def test_monthly_keeps_newest_of_each_month():
    plan = plan_retention(nightly(200), RetentionPolicy(days=7, monthly=6), NOW, last_run_ok=True)
    monthly = [b for b in plan.keep if plan.reasons[b.key].startswith("monthly")]
    months = {b.taken_at.strftime("%Y-%m") for b in monthly}
    assert len(monthly) == len(months) >= 5
    for b in monthly:  # it is the newest of its month
        same = [x for x in nightly(200) if x.taken_at.strftime("%Y-%m") == b.taken_at.strftime("%Y-%m")]
        assert b.taken_at == max(x.taken_at for x in same)


def test_failed_night_prunes_nothing():
    plan = plan_retention(nightly(40), RetentionPolicy(days=30), NOW, last_run_ok=False)
    assert plan.delete == () and plan.delete_keys == () and "failed" in plan.skipped


def test_unverified_newest_prunes_nothing():
    history = nightly(40, verified=lambda i: i != 39)
    plan = plan_retention(history, RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert plan.delete == () and "not verified" in plan.skipped


def test_newest_verified_survives_any_age():
    old = nightly(3, start=NOW - timedelta(days=100))
    plan = plan_retention(old, RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert [b.key for b in plan.keep] == [old[-1].key] and plan.reasons[old[-1].key] == "newest verified"


def test_shared_objects_are_kept_while_referenced():
    shared, only_old = "p/objects/sha1/aa/aa11", "p/objects/sha1/bb/bb22"
    history = nightly(35, objects=lambda i: frozenset({shared} | ({only_old} if i < 5 else set())))
    orphan = "p/objects/sha1/cc/cc33"
    plan = plan_retention(history, RetentionPolicy(days=30), NOW, last_run_ok=True,
                          all_objects={shared, only_old, orphan})
    assert shared not in plan.delete_keys and only_old in plan.delete_keys and orphan in plan.delete_keys


def test_databases_planned_apart_but_objects_shared():
    core = nightly(40, "odoo_core", objects=lambda i: frozenset({"o/x"}))
    dev = nightly(2, "odoo_dev", objects=lambda i: frozenset({"o/x"}), start=NOW - timedelta(days=60))
    plan = plan_retention(core + dev, RetentionPolicy(days=30), NOW, last_run_ok=True)
    assert dev[-1] in plan.keep and dev[0] in plan.delete and "o/x" not in plan.delete_keys


def test_render_rows():
    plan = plan_retention(nightly(32), RetentionPolicy(days=30), NOW, last_run_ok=True)
    rows = render_plan(plan)
    assert len(rows) == 32 and {r["action"] for r in rows} == {"keep", "delete"}


def random_history(rnd: random.Random):
    pool = [f"p/objects/sha1/{i:02x}/{i:040x}" for i in range(30)]
    out = []
    for db in rnd.sample(["odoo_core", "odoo_dev"], rnd.randint(1, 2)):
        day = NOW - timedelta(days=rnd.randint(0, 3))
        for _ in range(rnd.randint(1, 70)):
            key = f"p/manifests/{db}/{day:%Y%m%dT%H%M%SZ}.json"
            out.append(BackupRecord(key, db, day, rnd.random() > 0.15, frozenset(rnd.sample(pool, rnd.randint(0, 6))),
                                    frozenset({key, key + ".dump", key + ".fs"})))
            day -= timedelta(days=rnd.choice([1, 1, 1, 2, 5]), hours=rnd.randint(0, 5))
    return out, pool


@pytest.mark.parametrize("seed", range(500))
def test_generated_histories_hold_the_invariants(seed):
    rnd = random.Random(seed)
    history, pool = random_history(rnd)
    policy = RetentionPolicy(days=rnd.choice([1, 7, 30]), daily=rnd.randint(0, 7), weekly=rnd.randint(0, 5),
                             monthly=rnd.randint(0, 3))
    ok = rnd.random() > 0.2
    plan = plan_retention(history, policy, NOW, last_run_ok=ok, all_objects=[*pool, "p/objects/orphan"],
                          tz=ZoneInfo("Asia/Singapore"))
    assert {b.key for b in plan.keep} | {b.key for b in plan.delete} == {b.key for b in history}
    newest_unverified = any(not max((b for b in history if b.database == db), key=lambda b: b.taken_at).verified
                            for db in {b.database for b in history})
    if not ok or newest_unverified:
        assert plan.delete == () and plan.delete_keys == () and plan.skipped
        return
    for db in {b.database for b in history}:
        verified = [b for b in history if b.database == db and b.verified]
        if verified:
            assert max(verified, key=lambda b: b.taken_at) in plan.keep
    cutoff = NOW - timedelta(days=policy.days)
    assert all(b in plan.keep for b in history if b.taken_at > cutoff)
    kept_refs = set().union(*(b.objects | b.data_keys for b in plan.keep)) if plan.keep else set()
    assert not kept_refs & set(plan.delete_keys)
    assert "p/objects/orphan" in plan.delete_keys
    again = plan_retention(plan.keep, policy, NOW, last_run_ok=True, tz=ZoneInfo("Asia/Singapore"))
    assert again.delete == ()  # idempotent
