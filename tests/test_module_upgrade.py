"""module-upgrade on the test bed: the odoo stand-in changes the real database, /web/health is real HTTP.
Success; failing upgrade → rollback → healthy; hang → timeout → rollback; missing dependency and injection
refused before any change; a held lock makes a second run wait and give up."""

from __future__ import annotations

import pytest
import requests
import yaml

from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup import spaces
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import OpsError
from odoo_stack_ops.notify import ALERTED
from tests.faults import ended, run_flow

pytestmark = pytest.mark.integration
UPGRADE_CODE = ("from flows.module_upgrade import UpgradeRequest, module_upgrade\n"
                "module_upgrade(UpgradeRequest(install=['ipai_new']), stack_file={stack_file})")


@pytest.fixture
def run(prefect_harness, stack_tree, addons, tmp_path, pg_tls):
    from flows.module_upgrade import UpgradeRequest, module_upgrade

    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(stack_tree))

    def go(**kw):
        return module_upgrade(UpgradeRequest(**kw), stack_file=str(path))

    yield go
    addons.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
    pg_tls.execute("DELETE FROM ir_module_module WHERE name = 'ipai_new'", "odoo_core")


def state(pg, name):
    rows = pg.execute(f"SELECT state, latest_version FROM ir_module_module WHERE name = '{name}'", "odoo_core")
    return rows[0] if rows else None


def published(stack_tree):
    cfg = validate_tree(stack_tree)
    return rs.list_manifests(spaces.Bucket.open(cfg.spaces))


def test_success_installs_and_upgrades_then_stores_hashes(run, pg_tls, stack_tree, mattermost):
    mattermost.clear()
    out = run(install=["ipai_new"], upgrade=["ipai_finance_ppm"])
    assert out["result"] == "upgraded" and out["healthy_after_s"] >= 0 and out["downtime_s"] > 0
    assert out["rollback_point_verified"] == "yes"  # restore-verified once Odoo was back
    assert state(pg_tls, "ipai_new") == ("installed", "18.0.1.0.0")
    assert state(pg_tls, "ipai_finance_ppm") == ("installed", "18.0.1.0.5")
    assert len(published(stack_tree)) == 1  # the rollback point
    stored = pg_tls.execute("SELECT count(*) FROM ir_config_parameter WHERE key LIKE 'odoo_stack_ops.addon_hash.%'",
                            "odoo_core")[0][0]
    assert stored >= 2
    assert "upgraded" in mattermost.titles()[-1]
    # nothing changed since: "changed" finds nothing to do, and makes no backup
    again = run(changed=True)
    assert again["result"] == "nothing to do" and len(published(stack_tree)) == 1


def test_failing_upgrade_rolls_back_and_is_healthy(run, addons, pg_tls, mattermost):
    before = state(pg_tls, "ipai_finance_ppm")
    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo fail > /var/lib/odoo/.standin/mode"])
    mattermost.clear()
    with pytest.raises(OpsError, match="rolled back") as err:
        run(upgrade=["ipai_finance_ppm"])
    assert "Failed to load registry" in str(err.value)
    assert "FAILED and rolled back" in mattermost.titles()[-1]
    assert str(err.value).endswith(ALERTED)  # posted: the failure automation does not post it again
    assert state(pg_tls, "ipai_finance_ppm") == before  # 'to upgrade' was rolled back


def test_a_failure_after_odoo_started_on_the_new_code_restarts_it_in_the_rollback(run, pg_tls, stack_containers,
                                                                                  docker_client, monkeypatch):
    """The health gate fails once odoo-core runs again, on the upgraded code: the rollback must stop it before
    putting code and database back, so that the odoo-core it starts runs the old code (it used to leave the
    process that loaded the new code running, and report it healthy)."""
    import flows.module_upgrade as mu

    def started_at() -> str:
        return docker_client.containers.get(stack_containers["odoo-core"]["container"]).attrs["State"]["StartedAt"]

    real, starts = mu.start_odoo, []

    def start_then_fail_the_first_gate(cfg, conns, timeout_s):
        took = real(cfg, conns, timeout_s)
        starts.append(started_at())
        if len(starts) == 1:
            raise OpsError(f"odoo-core did not answer /web/health within {timeout_s:g} s")
        return took

    before = state(pg_tls, "ipai_finance_ppm")
    monkeypatch.setattr(mu, "start_odoo", start_then_fail_the_first_gate)
    with pytest.raises(OpsError, match="rolled back") as err:
        run(upgrade=["ipai_finance_ppm"])
    assert "did not answer /web/health" in str(err.value)
    assert len(starts) == 2 and starts[1] != starts[0]  # the rollback's start is a real restart
    assert state(pg_tls, "ipai_finance_ppm") == before


def test_a_rollback_point_that_cannot_be_verified_is_reported_and_the_good_upgrade_stands(run, pg_tls, monkeypatch):
    """Verifying the rollback point runs once Odoo is back on the new code: a Spaces or database hiccup there is
    reported, and must not roll back an upgrade that succeeded (users have written since)."""
    import flows.module_upgrade as mu

    def spaces_down(*_a, **_k):
        raise ConnectionError("Spaces unreachable")

    monkeypatch.setattr(mu, "verify", spaces_down)
    out = run(install=["ipai_new"])
    assert out["result"] == "upgraded"
    assert out["rollback_point_verified"].startswith("NO: could not verify: ConnectionError")
    assert state(pg_tls, "ipai_new") == ("installed", "18.0.1.0.0")


def test_an_upgrade_killed_mid_change_is_rolled_back_by_the_next_run_not_started_half_upgraded(
        run, addons, pg_tls, stack_tree, docker_client, tmp_path):
    """A worker killed (or a run cancelled) while odoo upgrades leaves odoo-core stopped on a database that may be
    half-upgraded. The next run must roll it back to the killed run's own backup before anything else; it used to
    remove the stand-by and start odoo-core on whatever the upgrade had left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    from odoo_stack_ops.upgrade.steps import MAINTENANCE_LABEL, UPGRADE_MARK
    from tests.fixtures.stack import free_killed_writers

    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo hang > /var/lib/odoo/.standin/mode"])
    code = ("from flows.module_upgrade import UpgradeRequest, module_upgrade\n"
            f"module_upgrade(UpgradeRequest(install=['ipai_new']), stack_file={str(tmp_path / 'stack.yaml')!r})")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def marked() -> str | None:
        for standby in docker_client.containers.list(filters={"label": [MAINTENANCE_LABEL]}):
            exit_code, out = standby.exec_run(["cat", UPGRADE_MARK])
            if exit_code == 0:
                return out.decode()
        return None

    try:
        deadline = time.monotonic() + 180
        while not (mark := marked()):
            assert time.monotonic() < deadline and proc.poll() is None, "the upgrade never began changing the stack"
            time.sleep(0.5)
        time.sleep(3)  # odoo -i runs (and hangs) in the stand-by
        pg_tls.execute("CREATE TABLE half_upgraded (x int)", "odoo_core")  # what the upgrade wrote so far
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    standbys = lambda: docker_client.containers.list(all=True, filters={"label": [MAINTENANCE_LABEL]})  # noqa: E731
    (standby,) = standbys()
    standby.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])  # odoo-core is stopped: its volume is here
    free_killed_writers(validate_tree(stack_tree).name)
    stamp = yaml.safe_load(mark)["rollback_point"]
    try:
        out = run(upgrade=["ipai_finance_ppm"], dry_run=True)
        assert out["interrupted_upgrade"].startswith(f"of odoo_core, rolled back: database restored from {stamp}")
        assert pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'half_upgraded'", "odoo_core") == [(0,)]
        assert state(pg_tls, "ipai_new") is None
        assert standbys() == []
        assert run(dry_run=True, upgrade=["ipai_finance_ppm"]).get("interrupted_upgrade") is None  # done once
    finally:  # whatever happened, later tests find odoo-core as they expect it
        pg_tls.execute("DROP TABLE IF EXISTS half_upgraded", "odoo_core")
        for left in standbys():
            left.remove(force=True)
            docker_client.containers.get(left.labels[MAINTENANCE_LABEL]).start()


def test_an_upgrade_cancelled_mid_change_rolls_back_at_once_and_odoo_runs_again(
        run, addons, pg_tls, stack_tree, docker_client, tmp_path):
    """A cancel from the UI reaches the run as SIGTERM (the worker kills it 30 s later): the rollback guard used to
    skip it (`except Exception`), leaving odoo-core stopped on a database that may be half-upgraded until the
    next run. The cancelled run rolls back itself; the run ends cancelled."""
    import os
    import signal
    import time

    from odoo_stack_ops.upgrade.steps import MAINTENANCE_LABEL, UPGRADE_MARK

    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo hang > /var/lib/odoo/.standin/mode"])
    proc = run_flow(UPGRADE_CODE, str(tmp_path / "stack.yaml"))
    standbys = lambda: docker_client.containers.list(all=True, filters={"label": [MAINTENANCE_LABEL]})  # noqa: E731
    try:
        deadline = time.monotonic() + 180
        while not any(s.exec_run(["cat", UPGRADE_MARK])[0] == 0 for s in standbys() if s.status == "running"):
            assert time.monotonic() < deadline and proc.poll() is None, "the upgrade never began changing the stack"
            time.sleep(0.5)
        time.sleep(3)  # odoo -i runs (and hangs) in the stand-by
        pg_tls.execute("CREATE TABLE half_upgraded (x int)", "odoo_core")
        for standby in standbys():  # the rollback starts odoo-core: it must not hang too
            standby.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
        os.kill(proc.pid, signal.SIGTERM)  # what the worker does first when the run is cancelled
        err = ended(proc, 180, "the cancelled upgrade")
        assert proc.returncode == -signal.SIGTERM, err[-2000:]  # it ends as terminated, after the rollback
        assert "upgrade cancelled: rolling back to" in err and "dropped odoo_core__before_" in err, err[-3000:]
        assert pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'half_upgraded'", "odoo_core") == [(0,)]
        assert state(pg_tls, "ipai_new") is None
        assert standbys() == []
        assert requests.get(stack_tree["odoo"]["health_url"], timeout=5).status_code == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pg_tls.execute("DROP TABLE IF EXISTS half_upgraded", "odoo_core")
        for left in standbys():
            left.remove(force=True)
            docker_client.containers.get(left.labels[MAINTENANCE_LABEL]).start()
        addons.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])


@pytest.mark.parametrize(("encrypted", "stop"), [(False, "cancel"), (True, "cancel"), (False, "worker-stop")],
                         ids=["plain", "encrypted", "worker-stop"])
def test_an_upgrade_cancelled_during_its_backup_starts_odoo_again(run, pg_tls, stack_tree, docker_client, tmp_path,
                                                                 stack_containers, encrypted, stop):
    """odoo-core is stopped before the rollback point is dumped, the longest step of an upgrade and the likeliest
    to be cancelled: the backup's guard was `except Exception`, so a cancel (SIGTERM) left odoo-core stopped
    behind the maintenance stand-by until the next upgrade. The dump's plaintext copy (kept for the rollback, also
    when the upload is encrypted) goes with the cancelled run. A stop of the worker's unit reaches the run as
    SIGINT twice (systemd signals every process of the unit, and the warm start forwards it): the second one,
    sent here while the guard starts odoo-core, used to cut it short."""
    import contextlib
    import glob
    import os
    import signal
    import subprocess
    import tempfile
    import time

    import docker
    import pyrage

    from odoo_stack_ops.upgrade.steps import MAINTENANCE_LABEL

    real = subprocess.run(["sh", "-c", "command -v pg_dump"], check=True, capture_output=True, text=True).stdout.strip()
    marker, bindir = tmp_path / "dumping", tmp_path / "bin"
    bindir.mkdir()
    (bindir / "pg_dump").write_text(f"#!/bin/sh\ncase \"$*\" in *--version*) exec {real} \"$@\";; esac\n"
                                    f"touch {marker}\nsleep 300\nexec {real} \"$@\"\n")
    (bindir / "pg_dump").chmod(0o755)
    if encrypted:
        public = str(pyrage.x25519.Identity.generate().to_public())
        (tmp_path / "stack.yaml").write_text(yaml.safe_dump(
            {**stack_tree, "backup": {**stack_tree["backup"], "age_recipients": [public]}}))
    proc = run_flow(UPGRADE_CODE, str(tmp_path / "stack.yaml"), env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    standbys = lambda: docker_client.containers.list(all=True, filters={"label": [MAINTENANCE_LABEL]})  # noqa: E731
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the upgrade never began its backup"
            time.sleep(0.3)
        assert standbys(), "odoo-core is stopped while its rollback point is dumped"
        plain = lambda: glob.glob(f"{tempfile.gettempdir()}/odoo-dump-*.{proc.pid}.*")  # noqa: E731
        assert plain(), "the dump's plaintext copy is being written"
        if stop == "cancel":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.kill(proc.pid, signal.SIGINT)
            while proc.poll() is None:  # until the guard has begun putting odoo-core back: its stand-by removed
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):  # removed while listed
                    if not standbys():
                        break
                time.sleep(0.02)
            with contextlib.suppress(ProcessLookupError):  # the first one ended it (no guard ran)
                os.kill(proc.pid, signal.SIGINT)
        err = ended(proc, 180, "the cancelled upgrade")
        assert proc.returncode == (-signal.SIGTERM if stop == "cancel" else -signal.SIGINT), err[-2000:]
        assert f"upgrade {'cancelled' if stop == 'cancel' else 'stopped'} during its backup" in err, err[-3000:]
        assert standbys() == []
        assert requests.get(stack_tree["odoo"]["health_url"], timeout=5).status_code == 200
        assert state(pg_tls, "ipai_new") is None and published(stack_tree) == []
        assert plain() == []
    finally:
        with contextlib.suppress(ProcessLookupError):  # the stalled pg_dump too, whatever became of the run
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for left in standbys():
            left.remove(force=True)
        odoo = docker_client.containers.get(stack_containers["odoo-core"]["container"])
        if odoo.status != "running":  # whatever became of the run, later tests find odoo-core running
            odoo.start()


def test_hung_upgrade_times_out_and_rolls_back(run, addons, pg_tls):
    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo hang > /var/lib/odoo/.standin/mode"])
    with pytest.raises(OpsError, match="did not finish within 3 s"):
        run(install=["ipai_new"], upgrade_timeout_s=3)
    assert state(pg_tls, "ipai_new") is None


def test_missing_dependency_refused_before_any_change(run, stack_tree):
    with pytest.raises(OpsError, match="missing dependency not_there"):
        run(install=["ipai_broken"])
    assert published(stack_tree) == []


def test_injection_in_a_module_name_is_refused(run, stack_tree, addons):
    for bad in ["x; touch /tmp/pwned", "$(id)", "base,web", "../etc"]:
        with pytest.raises(OpsError, match=r"identifier|not plain|refusing"):
            run(install=[bad])
    assert addons.exec_run(["sh", "-c", "ls /tmp/pwned 2>/dev/null | wc -l"]).output.strip() == b"0"
    assert published(stack_tree) == []


def test_dry_run_plans_only(run, pg_tls, stack_tree):
    out = run(install=["ipai_new"], dry_run=True)
    assert out["plan"]["install"] == ["ipai_new"] and out["result"].startswith("dry run")
    assert state(pg_tls, "ipai_new") is None and published(stack_tree) == []


def test_second_run_waits_for_the_lock_then_gives_up(run, pg_tls):
    import psycopg

    with psycopg.connect(**pg_tls.conninfo("postgres"), autocommit=True) as holder:  # locks live in the maintenance db
        holder.execute("SELECT pg_advisory_lock(hashtext('odoo-stack-ops:writer:sandbox'))")
        with pytest.raises(OpsError, match="another writer of stack sandbox is running"):
            run(install=["ipai_new"], lock_wait_s=2)
    assert state(pg_tls, "ipai_new") is None


def test_code_is_deployed_to_the_requested_ref_over_ssh(ssh_executor, tmp_path):
    import subprocess

    from odoo_stack_ops.upgrade import steps

    repo = tmp_path / "compose" / "addons" / "ipai"
    repo.mkdir(parents=True)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "PATH": "/usr/bin:/bin"}
    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "v1"], ["tag", "v1"],
                 ["commit", "-q", "--allow-empty", "-m", "v2"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    found = steps.deploy_code(ssh_executor, str(tmp_path / "compose"), "v1")
    assert [p.rstrip("/") for p in found] == [str(repo)]
    head = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s"], capture_output=True, text=True,
                          check=True).stdout
    assert head.strip() == "v1"
    with pytest.raises(OpsError, match="refusing git ref"):
        steps.deploy_code(ssh_executor, str(tmp_path / "compose"), "--upload-pack=touch /tmp/x")
