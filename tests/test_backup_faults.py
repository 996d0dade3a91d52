"""Faults during backup/nightly: S3 errors, the process killed at random points, the SSH connection cut.
After each: nothing half-published, no orphan multipart upload once the next run is done, and the next
run succeeds; retention never prunes after a failed night."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from odoo_stack_ops.backup import layout, spaces
from odoo_stack_ops.backup import manifest as mf
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import AccessDenied, OpsError
from odoo_stack_ops.notify import ALERTED
from tests.checks import task_runs, wait_until
from tests.faults import S3FaultProxy, TcpCutProxy, cancel_while_held, run_flow, stop_run
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
        proxy.fail(lambda m, p: m == "PUT" and "/packs/" in p, status=503, code="SlowDown", times=3)
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
        with pytest.raises(OpsError, match="AccessDenied") as failed:
            backup(stack_file=write(tree, tmp_path / "s.yaml"))
        cfg = validate_tree(tree)
        assert published(cfg) == [] and open_uploads(cfg) == []
        assert any("FAILED" in t for t in mattermost.titles())
        assert str(failed.value).endswith(ALERTED)  # posted: the failure automation does not post it again
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


# A night's phases in order: the task that runs each, and the S3 request that marks it (the first such request
# of a run is held while the run is killed).
PHASES: dict[str, tuple[str, Callable[[str, str], bool]]] = {
    "dump": ("dump-database", lambda m, p: m == "PUT" and "/db/" in p and "partNumber=" in p),
    "upload": ("backup-filestore", lambda m, p: m == "PUT" and ("/packs/" in p or "/filestore/" in p)),
    "verify": ("verify-backup", lambda m, p: m == "GET" and "/db/" in p),
    "publish": ("publish-manifest", lambda m, p: m == "PUT" and "/manifests/" in p),
    "prune": ("apply-retention", lambda m, p: m == "POST" and "?delete" in p),
}
# One kill per phase in CI; BACKUP_KILL_TRIALS=50 for the long run (counts go to BACKUP_KILL_REPORT if set).
KILL_TRIALS = int(os.environ.get("BACKUP_KILL_TRIALS", len(PHASES)))
# Imports the flow once, then forks one night per line on stdin (`flow-run-name stack-file`), in a session of its
# own so a kill takes its pg_dump along; says each child's pid and how it died. A kill costs no interpreter start.
FORK_SERVER = r"""
import os, sys
from flows.backup import backup
for line in sys.stdin:
    name, stack_file = line.split()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        try:
            backup.with_options(flow_run_name=name)(stack_file=stack_file)
        finally:
            os._exit(0)
    print(f"pid {pid}", flush=True)
    print(f"died {os.waitpid(pid, 0)[1]}", flush=True)
"""


def running_tasks(flow_run_name: str) -> set[str]:
    """The tasks Prefect shows Running in the named flow run: where a kill left it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name])))
    if not runs:
        return set()
    return {name for name, tries in task_runs(runs[0].id).items() if any(r.state.is_running() for r, _ in tries)}


def alive(pid: int) -> bool:
    """True while the forked night runs (its parent has not reaped it yet, so a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.timeout(max(600, 40 * KILL_TRIALS))  # a trial and the green night after it: ~10-20 s each
def test_killed_in_every_phase_then_the_next_night_succeeds(prefect_harness, stack_tree, s3, tmp_path, pg_tls):
    """Each trial SIGKILLs a night (a process of its own) while the S3 request marking one phase is in flight:
    held before S3 gets it, or once S3 has done it but before the run hears so (the first round: one trial per
    phase, the prune one mid-delete), or from the second round at a random moment after that request. Where it
    landed is read back from Prefect. After each: every listed backup is whole, and the next night is green and
    leaves no multipart upload (nor the pruned backups' keys) behind."""
    from prefect.settings import PREFECT_API_URL

    from flows.backup import backup

    tree = {**stack_tree, "backup": {**stack_tree["backup"], "retention_days": 1, "gc_grace_h": 0}}
    direct = write(tree, tmp_path / "direct.yaml")
    proxy = S3FaultProxy(s3.endpoint)
    through_proxy = write({**tree, "spaces": {**tree["spaces"], "endpoint": proxy.endpoint}}, tmp_path / "kill.yaml")
    cfg = validate_tree(tree)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    rnd = random.Random(7)
    landed: Counter[str] = Counter()
    tag = os.urandom(3).hex()
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    assert server.stdin is not None and server.stdout is not None
    try:
        for trial in range(KILL_TRIALS):
            phase = list(PHASES)[trial % len(PHASES)]
            task, match = PHASES[phase]
            first_round = trial < len(PHASES)
            aged = aged_copies(cfg, published(cfg)[-1], [10, 40]) if phase == "prune" else []
            held = proxy.hold(match, forward=(phase == "prune") if first_round else rnd.random() < 0.5)
            name = f"killed-{tag}-{trial}"
            server.stdin.write(f"{name} {through_proxy}\n")
            pid = int(server.stdout.readline().split()[1])
            try:
                wait_until(lambda h=held, p=pid: h.reached.is_set() or not alive(p), 120, f"the {phase} request")
                assert alive(pid), f"trial {trial}: the night ended before its {phase} request"
                if first_round:
                    wait_until(lambda n=name, t=task: running_tasks(n) == {t}, 20, f"Prefect to show {task} running")
                else:
                    held.release.set()
                    time.sleep(rnd.uniform(0, 0.5))  # a random moment, not a synchronisation
            finally:
                os.killpg(pid, signal.SIGKILL)
                died = server.stdout.readline().split()
                assert died[0] == "died" and os.WIFSIGNALED(int(died[1])), died
                held.release.set()
                proxy.holds.clear()
            where = running_tasks(name)
            landed.update([next((p for p, (t, _) in PHASES.items() if t in where), "between tasks")])
            assert_consistent(cfg)  # whatever is listed is whole
            free_killed_writers(cfg.name)
            backup(stack_file=direct)
            assert published(cfg)[-1].verified
            assert open_uploads(cfg) == []
            assert not set(aged) & bucket_keys(cfg)
    finally:
        proxy.stop()
        server.stdin.close()
        server.wait(timeout=30)
    if os.environ.get("BACKUP_KILL_REPORT"):
        Path(os.environ["BACKUP_KILL_REPORT"]).write_text(json.dumps({"trials": KILL_TRIALS, "landed": landed}))
    assert sum(landed.values()) == KILL_TRIALS
    if len(PHASES) == KILL_TRIALS:
        assert landed == dict.fromkeys(PHASES, 1), landed
    else:
        # after the first round a kill lands at a random moment after its phase's request: in that phase, the
        # next one or between tasks (50 trials on this test bed: dump 4, upload 4, verify 17, publish 1, prune 10,
        # between tasks 14); every phase is hit
        assert all(landed[p] >= 1 for p in PHASES), landed
    assert pg_tls.execute("SELECT datname FROM pg_database WHERE datname LIKE 'verify%'") == []


HANGS = {"dump": PHASES["dump"][1], "pack": lambda m, p: m == "PUT" and "/packs/" in p}


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("phase", list(HANGS))
def test_a_night_cancelled_while_s3_hangs_ends_in_seconds_and_leaves_no_upload_open(prefect_harness, stack_tree, s3,
                                                                                      tmp_path, phase, encrypted):
    """A cancel reaches a run as SIGTERM: its guards abort the upload and re-raise. The upload threads used to be
    joined (by the abort, and again at exit) while one hung reading from a dead connection, so the run outlived
    Prefect's 30 s grace and was SIGKILLed, skipping the guards still to run (an upgrade's restart of odoo-core,
    a plaintext spool's removal)."""
    import glob
    import tempfile

    proxy = S3FaultProxy(s3.endpoint)
    held = proxy.hold(HANGS[phase])  # held until the end of the test: a connection that never answers
    tree = {**stack_tree, "spaces": {**stack_tree["spaces"], "prefix": f"hang-{os.urandom(3).hex()}"}}  # all new
    if encrypted:  # the upload goes through age's writer, each pack's file through its encryptor
        import pyrage

        public = str(pyrage.x25519.Identity.generate().to_public())
        tree = {**tree, "backup": {**tree["backup"], "age_recipients": [public]}}
    stack_file = write({**tree, "spaces": {**tree["spaces"], "endpoint": proxy.endpoint}}, tmp_path / "s.yaml")
    proc = run_flow("from flows.backup import backup\nbackup(stack_file={stack_file})", stack_file)
    try:
        cancel_while_held(proc, held, f"the {phase} request at S3")
        assert glob.glob(f"{tempfile.gettempdir()}/odoo-dump-*.{proc.pid}.*") == []  # its guard ran
        assert open_uploads(validate_tree(tree)) == []
    finally:
        stop_run(proc, held, proxy)


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
