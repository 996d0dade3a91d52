"""Faults during backup/nightly: S3 errors, the process killed at random points, the SSH connection cut.
After each: nothing half-published, no orphan multipart upload once the next run is done, and the next
run succeeds; retention never prunes after a failed night."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from odoo_stack_ops.backup import layout, spaces
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import AccessDenied, OpsError
from tests.checks import task_runs
from tests.faults import S3FaultProxy, TcpCutProxy
from tests.fixtures.stack import free_killed_writers, published
from tests.fixtures.stack import write_tree as write

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent



def assert_consistent(cfg):
    """Every published manifest's dump exists and hashes as recorded; its filestore manifest exists."""
    s3 = spaces.client(cfg.spaces)
    for m in published(cfg):
        h = hashlib.sha256()
        for chunk in spaces.read_chunks(s3, cfg.spaces.bucket, m.dump.key):
            h.update(chunk)
        assert h.hexdigest() == m.dump.stored_sha256
        s3.head_object(Bucket=cfg.spaces.bucket, Key=m.filestore.manifest_key)


def open_uploads(cfg):
    s3 = spaces.client(cfg.spaces)
    return s3.list_multipart_uploads(Bucket=cfg.spaces.bucket).get("Uploads", [])



def test_transient_s3_errors_are_retried_and_the_night_succeeds(prefect_harness, stack_tree, s3, tmp_path):
    """Short outages are absorbed by botocore's own attempts; one that outlasts them (every attempt at the
    filestore manifest answered 503) fails the task attempt, and Prefect's retry of the task carries the night."""
    from flows.backup import backup

    attempts = 1 + spaces.boto_config(s3.endpoint).retries["max_attempts"]  # botocore's count is of retries
    proxy = S3FaultProxy(s3.endpoint)
    try:
        proxy.fail(lambda m, p: m == "PUT" and "partNumber=1" in p, times=2)  # first dump part, twice
        proxy.fail(lambda m, p: m == "PUT" and "/objects/" in p, status=503, code="SlowDown", times=3)
        proxy.fail(lambda m, p: m == "PUT" and "/filestore/" in p and ".json.zst" in p, status=503,
                   code="ServiceUnavailable", times=attempts)
        tree = {**stack_tree, "spaces": {**stack_tree["spaces"], "endpoint": proxy.endpoint}}
        state = backup(stack_file=write(tree, tmp_path / "s.yaml"), return_state=True)
        assert state.is_completed(), state.message
        runs = task_runs(state.state_details.flow_run_id)
        ((dump, dump_history),) = runs["dump-database"]
        assert dump.run_count == 1 and "AwaitingRetry" not in dump_history, dump_history  # botocore absorbed it
        ((filestore, history),) = runs["backup-filestore"]
        assert filestore.run_count == 2 and filestore.state.is_completed(), history
        assert history == ["Pending", "Running", "AwaitingRetry", "Retrying", "Completed"], history
        cfg = validate_tree(tree)
        assert [m.verified for m in published(cfg)] == [True]
        assert all(rule[3] == 0 for rule in proxy.rules)  # every injected fault was hit
        assert open_uploads(cfg) == []
    finally:
        proxy.stop()


def test_permanent_s3_error_publishes_nothing_and_leaves_no_parts(prefect_harness, stack_tree, s3, mattermost,
                                                                   tmp_path):
    from flows.backup import backup

    proxy = S3FaultProxy(s3.endpoint)
    try:
        proxy.fail(lambda m, p: m == "POST" and "uploadId=" in p, status=403, code="AccessDenied", times=100)
        tree = {**stack_tree, "spaces": {**stack_tree["spaces"], "endpoint": proxy.endpoint}}
        mattermost.clear()
        with pytest.raises(OpsError, match="AccessDenied"):
            backup(stack_file=write(tree, tmp_path / "s.yaml"))
        cfg = validate_tree(tree)
        assert published(cfg) == [] and open_uploads(cfg) == []
        assert any("FAILED" in t for t in mattermost.titles())
    finally:
        proxy.stop()


def test_wrong_spaces_secret_fails_before_any_dump_and_is_not_retried(prefect_harness, stack_tree, s3, tmp_path):
    """The test bed's S3 checks SigV4 signatures as Spaces does: a wrong secret is refused at the bucket check,
    once, with the setting to fix, and nothing is dumped or uploaded."""
    from flows.backup import backup

    tree = {**stack_tree, "spaces": {**stack_tree["spaces"], "secret_access_key": "not-the-issued-secret"}}
    state = backup(stack_file=write(tree, tmp_path / "s.yaml"), return_state=True)
    assert state.is_failed()
    with pytest.raises(AccessDenied, match="SPACES_SECRET_ACCESS_KEY is wrong"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    ((prepare, history),) = runs["prepare-bucket"]
    assert prepare.run_count == 1 and history == ["Pending", "Running", "Failed"], history
    assert "dump-database" not in runs and "backup-filestore" not in runs, sorted(runs)
    cfg = validate_tree(stack_tree)  # the right key: the bucket is untouched
    assert bucket_keys(cfg) == set() and open_uploads(cfg) == []


def test_killed_at_random_points_then_the_next_run_succeeds(prefect_harness, stack_tree, tmp_path, pg_tls):
    """Killed runs hold the writer lock until their Prefect lease runs out (the advisory lock goes with the
    session); with no grace period the next run sweeps what they left."""
    from prefect.settings import PREFECT_API_URL

    from flows.backup import backup

    stack_tree = {**stack_tree, "backup": {**stack_tree["backup"], "gc_grace_h": 0}}
    stack_file = write(stack_tree, tmp_path / "s.yaml")
    cfg = validate_tree(stack_tree)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    code = f"from flows.backup import backup; backup(stack_file={stack_file!r})"
    rnd = random.Random(7)
    for delay in sorted(rnd.uniform(2.0, 9.0) for _ in range(4)):
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert_consistent(cfg)  # whatever was published is whole
    try:
        backup(stack_file=stack_file)  # goes on although a killed run's Prefect slot is still taken
    finally:
        free_killed_writers(cfg.name)
    assert_consistent(cfg)
    assert published(cfg)[-1].verified
    assert open_uploads(cfg) == []
    leftovers = pg_tls.execute("SELECT datname FROM pg_database WHERE datname LIKE 'verify%'")
    assert leftovers == []


def test_ssh_cut_mid_run_is_retried(prefect_harness, stack_tree, sshd, tmp_path):
    from flows.backup import backup

    proxy = TcpCutProxy(sshd.host, sshd.port)
    try:
        known = tmp_path / "known_hosts"
        known.write_text(Path(stack_tree["ssh"]["known_hosts"]).read_text().replace(f"]:{sshd.port} ",
                                                                                   f"]:{proxy.port} "))
        tree = {**stack_tree, "ssh": {**stack_tree["ssh"], "port": proxy.port, "known_hosts": str(known)}}
        proxy.cut_after = 60_000  # inside the first filestore transfer
        backup(stack_file=write(tree, tmp_path / "s.yaml"))
        assert proxy.cuts == 1
        assert published(validate_tree(tree))[-1].verified
    finally:
        proxy.stop()


def aged_copies(cfg, manifest, days: list[int]) -> list[str]:
    """Copies of a published backup as if taken `days` ago, each with its own dump and filestore manifest (the
    objects stay shared, as between real nights); returns every key they own, manifests first."""
    bucket = spaces.Bucket.open(cfg.spaces)
    manifests, data = [], []
    for age in days:
        st = layout.stamp(datetime.now(UTC) - timedelta(days=age))
        dump = layout.dump_key(bucket.prefix, manifest.database, st, manifest.dump.key.endswith(".age"))
        filestore = layout.filestore_manifest_key(bucket.prefix, manifest.database, st)
        bucket.put_bytes(dump, bucket.get_bytes(manifest.dump.key))
        bucket.put_bytes(filestore, bucket.get_bytes(manifest.filestore.manifest_key))
        old = manifest.model_copy(update={
            "stamp": st, "started_at": manifest.started_at - timedelta(days=age),
            "finished_at": manifest.finished_at - timedelta(days=age),
            "dump": manifest.dump.model_copy(update={"key": dump}),
            "filestore": manifest.filestore.model_copy(update={"manifest_key": filestore})})
        key = layout.manifest_key(bucket.prefix, manifest.database, st)
        bucket.put_bytes(key, mf.encode(old), "application/json")
        manifests.append(key)
        data += [dump, filestore]
    return manifests + data


def bucket_keys(cfg) -> set[str]:
    return {o["Key"] for o in spaces.Bucket.open(cfg.spaces).iter_objects(cfg.spaces.prefix + "/")}


def test_failed_night_does_not_prune(prefect_harness, stack_tree, tmp_path):
    from flows.backup import backup

    # One day's retention and no grace: backups 3, 10 and 40 days old, and every key only they own, are
    # prunable the moment a night succeeds.
    tree = {**stack_tree, "backup": {**stack_tree["backup"], "retention_days": 1, "gc_grace_h": 0}}
    path = write(tree, tmp_path / "s.yaml")
    backup(stack_file=path)
    cfg = validate_tree(tree)
    (tonight,) = published(cfg)
    aged = aged_copies(cfg, tonight, [3, 10, 40])
    assert [m.stamp for m in published(cfg)][:3] == [k.rsplit("/", 1)[1].removesuffix(".json") for k in aged[:3]][::-1]
    before = bucket_keys(cfg)

    broken = {**tree, "backup": {**tree["backup"], "databases": ["odoo_core", "missing_db"]},
              "database": {**tree["database"], "databases": ["odoo_core", "odoo_dev", "missing_db"]}}
    with pytest.raises(OpsError, match="missing_db"):  # odoo_core backed up, missing_db failed: the night failed
        backup(stack_file=write(broken, tmp_path / "b.yaml"))
    after = bucket_keys(cfg)
    assert set(aged) <= after and before <= after, sorted(before - after)

    backup(stack_file=path)  # the same bucket after a night that succeeds: the aged backups go
    left = bucket_keys(cfg)
    assert not set(aged) & left, sorted(set(aged) & left)
    stamps = [m.stamp for m in published(cfg)]  # the three minutes-old nights stay, the failed one's odoo_core too
    assert len(stamps) == 3 and stamps[0] == tonight.stamp, stamps
