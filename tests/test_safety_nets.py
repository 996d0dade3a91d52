"""Safety nets on the real test bed: a rollback that brings code and database back (encrypted, no key on the
worker), restores that never destroy first (pg_restore dying half way, the worker killed half way), one
writer at a time, and a staging refresh that never leaves an un-neutralized copy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyrage
import pytest
import requests

from odoo_stack_ops.backup import restore as rs
from odoo_stack_ops.backup import spaces
from odoo_stack_ops.config import validate_tree
from odoo_stack_ops.errors import CommandFailed, OpsError, VerificationFailed
from tests.checks import wait_until
from tests.faults import run_flow
from tests.fixtures.stack import free_killed_writers, published
from tests.fixtures.stack import write_tree as write

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x",
           "PATH": "/usr/bin:/bin", "HOME": "/tmp"}




def databases(pg, like):
    return sorted(r[0] for r in pg.execute(f"SELECT datname FROM pg_database WHERE datname LIKE '{like}'"))


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, env=GIT_ENV, capture_output=True,
                          text=True).stdout.strip()


def fake_pg_restore(tmp_path, script: str) -> str:
    """A PATH entry whose pg_restore runs the real one under `script` (to die or stall half way)."""
    real = subprocess.run(["sh", "-c", "command -v pg_restore"], check=True, capture_output=True, text=True).stdout.strip()
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "pg_restore").write_text(f"#!/bin/sh\nREAL={real}\n{script}\n")
    (bindir / "pg_restore").chmod(0o755)
    return f"{bindir}:{os.environ['PATH']}"


DIES_HALF_WAY = '"$REAL" "$@" & pid=$!; sleep 0.3; kill -9 $pid; wait $pid; exit 137'
STALLS = 'sleep 300; exec "$REAL" "$@"'


@pytest.fixture
def addons_repo(addons, stack_containers):
    """odoo-core's ./addons/ipai as a git checkout on the droplet (this machine): v1 checked out, v2 bumps PPM."""
    repo = Path(stack_containers["odoo-core"]["addons_dir"]) / "ipai"
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")
    manifest = repo / "ipai_finance_ppm" / "__manifest__.py"
    manifest.write_text(manifest.read_text().replace("18.0.1.0.5", "18.0.1.0.6"))
    git(repo, "commit", "-q", "-am", "v2")
    git(repo, "tag", "v2")
    manifest.write_text(manifest.read_text().replace("'depends': ['account']", "'depends': ['account', 'not_there']"))
    git(repo, "commit", "-q", "-am", "v3: a dependency nobody has")
    git(repo, "tag", "v3")
    git(repo, "checkout", "-q", "--detach", "v1")
    yield repo
    git(repo, "checkout", "-q", "--force", "--detach", "v1")
    subprocess.run(["rm", "-rf", str(repo / ".git")], check=True)


CODE_UPGRADE = ("from flows.module_upgrade import UpgradeRequest, module_upgrade\n"
                "module_upgrade(UpgradeRequest(upgrade=['ipai_finance_ppm'], addons_ref='v2'), stack_file={stack_file})")


def upgrading(proc, addons_repo, v1, standbys, pg) -> None:
    """Until the run of CODE_UPGRADE has deployed its code and odoo -u runs; then a table it half-created."""
    deadline = time.monotonic() + 180
    while git(addons_repo, "rev-parse", "HEAD") == v1 or not standbys():
        assert time.monotonic() < deadline and proc.poll() is None, "the upgrade never deployed its code"
        time.sleep(0.5)
    time.sleep(3)
    pg.execute("CREATE TABLE half_upgraded (x int)", "odoo_core")


def test_encrypted_failing_upgrade_with_code_deploy_rolls_back_code_and_database(
        prefect_harness, stack_tree, addons_repo, addons, pg_tls, docker_client, tmp_path):
    from flows.module_upgrade import UpgradeRequest, module_upgrade

    public = str(pyrage.x25519.Identity.generate().to_public())  # the private key never reaches the worker
    tree = {**stack_tree, "backup": {**stack_tree["backup"], "age_recipients": [public]},
            "odoo": {**stack_tree["odoo"], "compose_dir": str(addons_repo.parent.parent)}}
    v1 = git(addons_repo, "rev-parse", "HEAD")
    before = pg_tls.execute("SELECT name, state, latest_version FROM ir_module_module ORDER BY name", "odoo_core")
    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo fail > /var/lib/odoo/.standin/mode"])
    try:
        with pytest.raises(OpsError, match="rolled back") as err:
            module_upgrade(UpgradeRequest(upgrade=["ipai_finance_ppm"], addons_ref="v2"),
                           stack_file=write(tree, tmp_path / "s.yaml"))
    finally:
        addons.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
    assert "Failed to load registry" in str(err.value)
    assert git(addons_repo, "rev-parse", "HEAD") == v1  # the code is back
    assert pg_tls.execute("SELECT name, state, latest_version FROM ir_module_module ORDER BY name",
                          "odoo_core") == before  # and the database
    (point,) = published(validate_tree(tree))
    assert point.encryption.enabled and point.dump.key.endswith(".age")
    assert requests.get(stack_tree["odoo"]["health_url"], timeout=5).status_code == 200
    assert not docker_client.containers.list(all=True, filters={"label": ["odoo-stack-ops.maintenance"]})
    assert databases(pg_tls, "odoo_core\\_\\_%") == []


@pytest.mark.parametrize("plain_copy", ["left-on-this-worker", "gone"])
def test_an_encrypted_upgrade_with_code_deploy_killed_mid_change_is_rolled_back_by_the_next_run(
        prefect_harness, stack_tree, addons_repo, addons, pg_tls, docker_client, tmp_path, plain_copy):
    """Encryption on, no private key on the worker, code deploy on, the upgrade killed while odoo upgrades: the
    next run rolls code and database back from the killed run's plaintext copy of its backup (hash-checked), which
    is on this worker. Without that copy it cannot decrypt: it says what to do and keeps odoo-core stopped."""
    import glob
    import tempfile

    from flows.module_upgrade import UpgradeRequest, module_upgrade
    from odoo_stack_ops.upgrade import steps
    from tests.fixtures.stack import free_killed_writers

    public = str(pyrage.x25519.Identity.generate().to_public())
    tree = {**stack_tree, "backup": {**stack_tree["backup"], "age_recipients": [public]},
            "odoo": {**stack_tree["odoo"], "compose_dir": str(addons_repo.parent.parent)}}
    stack_file = write(tree, tmp_path / "s.yaml")
    v1 = git(addons_repo, "rev-parse", "HEAD")
    before = pg_tls.execute("SELECT name, state, latest_version FROM ir_module_module ORDER BY name", "odoo_core")
    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo hang > /var/lib/odoo/.standin/mode"])
    proc = run_flow(CODE_UPGRADE, stack_file, stderr=subprocess.DEVNULL)
    standbys = lambda: docker_client.containers.list(all=True, filters={"label": [steps.MAINTENANCE_LABEL]})  # noqa: E731
    try:
        upgrading(proc, addons_repo, v1, standbys, pg_tls)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (standby,) = standbys()
    standby.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
    free_killed_writers(validate_tree(tree).name)
    copies = glob.glob(f"{tempfile.gettempdir()}/odoo-dump-*/odoo_core-*.dump.zst")
    assert len(copies) == 1, copies  # the killed run's plaintext copy of its backup
    if plain_copy == "gone":
        subprocess.run(["rm", "-rf", str(Path(copies[0]).parent)], check=True)
    try:
        if plain_copy == "gone":
            with pytest.raises(OpsError, match=r"rolling it back failed .* odoo-core stays stopped") as err:
                module_upgrade(UpgradeRequest(upgrade=["ipai_finance_ppm"], dry_run=True), stack_file=stack_file)
            assert "age_identity" in str(err.value)
            assert git(addons_repo, "rev-parse", "HEAD") == v1  # the code went back before the restore failed
            assert len(standbys()) == 1  # nothing half-upgraded is served
            return
        out = module_upgrade(UpgradeRequest(upgrade=["ipai_finance_ppm"], dry_run=True), stack_file=stack_file)
        assert out["interrupted_upgrade"].startswith("of odoo_core, rolled back: code back at"), out
        assert git(addons_repo, "rev-parse", "HEAD") == v1
        assert pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'half_upgraded'", "odoo_core") == [(0,)]
        assert pg_tls.execute("SELECT name, state, latest_version FROM ir_module_module ORDER BY name",
                              "odoo_core") == before
        assert standbys() == [] and not Path(copies[0]).parent.exists()
        assert requests.get(stack_tree["odoo"]["health_url"], timeout=5).status_code == 200
    finally:  # whatever happened, later tests find odoo-core and the addons as they expect them
        pg_tls.execute("DROP TABLE IF EXISTS half_upgraded", "odoo_core")
        for left in standbys():
            left.remove(force=True)
            docker_client.containers.get(left.labels[steps.MAINTENANCE_LABEL]).start()


def test_an_encrypted_upgrade_with_code_deploy_cancelled_mid_change_rolls_back_code_and_database_at_once(
        prefect_harness, stack_tree, addons_repo, addons, pg_tls, docker_client, tmp_path):
    """The cancel (SIGTERM) of an upgrade that deployed code, encryption on and no private key on the worker: the
    cancelled run itself checks the old code out again and restores the database from its own plaintext copy,
    starts odoo-core, removes that copy, and ends as terminated."""
    import glob
    import tempfile

    from odoo_stack_ops.upgrade import steps
    from tests.faults import ended

    public = str(pyrage.x25519.Identity.generate().to_public())
    tree = {**stack_tree, "backup": {**stack_tree["backup"], "age_recipients": [public]},
            "odoo": {**stack_tree["odoo"], "compose_dir": str(addons_repo.parent.parent)}}
    v1 = git(addons_repo, "rev-parse", "HEAD")
    before = pg_tls.execute("SELECT name, state, latest_version FROM ir_module_module ORDER BY name", "odoo_core")
    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo hang > /var/lib/odoo/.standin/mode"])
    proc = run_flow(CODE_UPGRADE, write(tree, tmp_path / "s.yaml"))
    standbys = lambda: docker_client.containers.list(all=True, filters={"label": [steps.MAINTENANCE_LABEL]})  # noqa: E731
    try:
        upgrading(proc, addons_repo, v1, standbys, pg_tls)
        for standby in standbys():  # the rollback starts odoo-core: it must not hang too
            standby.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
        proc.send_signal(signal.SIGTERM)
        err = ended(proc, 180, "the cancelled upgrade")
        assert proc.returncode == -signal.SIGTERM, err[-2000:]
        assert "upgrade cancelled: rolling back to" in err, err[-3000:]
        assert git(addons_repo, "rev-parse", "HEAD") == v1  # the code is back
        assert pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'half_upgraded'", "odoo_core") == [(0,)]
        assert pg_tls.execute("SELECT name, state, latest_version FROM ir_module_module ORDER BY name",
                              "odoo_core") == before
        assert standbys() == []
        assert requests.get(stack_tree["odoo"]["health_url"], timeout=5).status_code == 200
        assert glob.glob(f"{tempfile.gettempdir()}/odoo-dump-*.{proc.pid}.*") == []  # the plaintext copy is gone
    finally:  # whatever happened, later tests find odoo-core and the addons as they expect them
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        addons.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
        pg_tls.execute("DROP TABLE IF EXISTS half_upgraded", "odoo_core")
        for left in standbys():
            left.remove(force=True)
            docker_client.containers.get(left.labels[steps.MAINTENANCE_LABEL]).start()


def test_a_plan_refused_at_the_new_ref_changes_nothing(prefect_harness, stack_tree, addons_repo, docker_client,
                                                       stack_containers, tmp_path):
    """The plan reads the ref unpacked beside the checkout: refused with the served code, Odoo and the bucket
    untouched."""
    from flows.module_upgrade import UpgradeRequest, module_upgrade

    tree = {**stack_tree, "odoo": {**stack_tree["odoo"], "compose_dir": str(addons_repo.parent.parent)}}
    v1 = git(addons_repo, "rev-parse", "HEAD")
    odoo = docker_client.containers.get(stack_containers["odoo-core"]["container"])
    started_at = odoo.attrs["State"]["StartedAt"]
    with pytest.raises(OpsError, match=r"refused before any change: .*not_there"):
        module_upgrade(UpgradeRequest(upgrade=["ipai_finance_ppm"], addons_ref="v3"),
                       stack_file=write(tree, tmp_path / "s.yaml"))
    assert git(addons_repo, "rev-parse", "HEAD") == v1
    assert git(addons_repo, "status", "--porcelain") == ""
    odoo.reload()
    assert odoo.status == "running" and odoo.attrs["State"]["StartedAt"] == started_at  # never stopped
    assert published(validate_tree(tree)) == []
    out = module_upgrade(UpgradeRequest(upgrade=["ipai_finance_ppm"], addons_ref="v2", dry_run=True),
                         stack_file=write(tree, tmp_path / "s.yaml"))
    assert out["plan"]["upgrade"] == ["ipai_finance_ppm"] and git(addons_repo, "rev-parse", "HEAD") == v1


def test_pg_restore_dying_half_way_in_a_rollback_leaves_the_live_database(
        prefect_harness, stack_tree, addons, pg_tls, docker_client, tmp_path, monkeypatch):
    from flows.module_upgrade import UpgradeRequest, module_upgrade
    from odoo_stack_ops.connect import Connections
    from odoo_stack_ops.upgrade import steps

    monkeypatch.setenv("PATH", fake_pg_restore(tmp_path, DIES_HALF_WAY))
    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo fail > /var/lib/odoo/.standin/mode"])
    try:
        with pytest.raises(OpsError, match="AND rollback failed"):
            module_upgrade(UpgradeRequest(upgrade=["ipai_finance_ppm"]), stack_file=write(stack_tree, tmp_path / "s.yaml"))
        # the live database was never dropped: it still answers, with the content it had when the rollback began
        rows = pg_tls.execute("SELECT state FROM ir_module_module WHERE name = 'ipai_finance_ppm'", "odoo_core")
        assert rows == [("to upgrade",)]
        assert pg_tls.execute("SELECT count(*) FROM res_partner", "odoo_core")[0][0] == 200
        assert databases(pg_tls, "odoo_core\\_\\_%") == []  # the partial copy is gone
    finally:  # a failed rollback leaves odoo-core stopped on purpose (nothing half-restored is served)
        with Connections(validate_tree(stack_tree)) as conns:
            steps.end_maintenance(conns, "odoo-core")
        addons.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
        pg_tls.execute("UPDATE ir_module_module SET state = 'installed' WHERE name = 'ipai_finance_ppm'", "odoo_core")


def assert_victim_untouched(pg_tls) -> None:
    """`victim` still holds the row no backup has, and no copy of it is left."""
    assert pg_tls.execute("SELECT x FROM only_in_victim", "victim") == [(42,)]
    assert databases(pg_tls, "victim\\_\\_%") == []


@pytest.fixture
def victim(prefect_harness, stack_file, pg_tls):
    """A restored database `victim` holding a row no backup has: it must survive every failed restore."""
    from flows.backup import backup
    from flows.restore import restore

    backup(stack_file=stack_file)
    restore(stack_file=stack_file, database="odoo_core", target_database="victim", restore_filestore=False)
    pg_tls.execute("CREATE TABLE only_in_victim (x int); INSERT INTO only_in_victim VALUES (42)", "victim")
    yield "victim"
    pg_tls.dropdb("victim")


def test_pg_restore_dying_half_way_in_an_overwrite_restore_leaves_the_live_database(
        victim, stack_file, pg_tls, tmp_path, monkeypatch):
    from flows.restore import restore

    monkeypatch.setenv("PATH", fake_pg_restore(tmp_path, DIES_HALF_WAY))
    with pytest.raises(CommandFailed, match=r"137|pg_restore"):
        restore(stack_file=stack_file, database="odoo_core", target_database=victim, overwrite=True,
                restore_filestore=False)
    assert_victim_untouched(pg_tls)


def test_worker_killed_during_an_overwrite_restore_leaves_the_live_database(
        victim, stack_file, stack_config, pg_tls, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from flows.restore import restore

    env = {**os.environ, "PATH": fake_pg_restore(tmp_path, STALLS), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    code = (f"from flows.restore import restore; restore(stack_file={stack_file!r}, database='odoo_core', "
            f"target_database='victim', overwrite=True, restore_filestore=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not databases(pg_tls, "victim\\_\\_restoring\\_%"):  # pg_restore is about to fill the copy
            assert time.monotonic() < deadline and proc.poll() is None, "the restore never reached pg_restore"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert pg_tls.execute("SELECT x FROM only_in_victim", victim) == [(42,)]
    # the next restore goes on (the killed run's advisory lock died with it; its Prefect slot is named),
    # sweeps the killed one's copy and succeeds
    try:
        out = restore(stack_file=stack_file, database="odoo_core", target_database=victim, overwrite=True,
                      restore_filestore=False)
    finally:
        free_killed_writers(stack_config.name)
    assert out["replaced_copy"].endswith("(dropped after the gate passed)")
    assert databases(pg_tls, "victim\\_\\_%") == []
    assert pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'only_in_victim'", victim) == [(0,)]


def test_a_connection_cut_between_the_renames_of_a_swap_puts_the_live_database_back(
        victim, stack_file, pg_tls, monkeypatch):
    """The swap's connection dies after the live database was renamed away: putting it back must not use that
    connection (it did, so `victim` stayed missing until someone renamed it back by hand)."""
    from flows.restore import restore

    real = rs._rename

    def cut_before_the_second(conn, old, new, *a):
        if new == "victim" and "__restoring_" in old:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return real(conn, old, new, *a)

    monkeypatch.setattr(rs, "_rename", cut_before_the_second)
    with pytest.raises(Exception, match="terminat"):
        restore(stack_file=stack_file, database="odoo_core", target_database=victim, overwrite=True,
                restore_filestore=False)
    assert_victim_untouched(pg_tls)


def test_a_filestore_restore_that_would_fill_odoos_volume_is_refused_before_anything_is_written(
        victim, stack_tree, stack_config, pg_tls, tmp_path):
    """The restored filestore is unpacked beside the live one: on a nearly full volume that would stop Odoo
    writing attachments half way through. The restore must refuse first, saying why, and change nothing."""
    from flows.restore import restore

    tree = {**stack_tree, "restore": {**stack_tree.get("restore", {}), "min_free_after_mb": 10**9}}
    with pytest.raises(OpsError, match=r"must stay free for Odoo .* Nothing was changed"):
        restore(stack_file=write(tree, tmp_path / "full.yaml"), database="odoo_core", target_database=victim,
                overwrite=True)
    assert_victim_untouched(pg_tls)
    assert filestore_dirs(stack_config, "victim__") == []


KILLS = {  # the restore's process SIGKILLed at a point after the live database was renamed away
    "in-its-gate": "import flows.restore as r; r.gate = lambda *a, **k: os.kill(os.getpid(), 9)",
    "between-its-renames": "import odoo_stack_ops.backup.restore as rs; real = rs._rename; "
                           "rs._rename = lambda c, old, new, *a: os.kill(os.getpid(), 9) if new == 'victim' "
                           "else real(c, old, new, *a)",
}


@pytest.mark.parametrize("kill", list(KILLS))
def test_a_restore_killed_after_its_swap_leaves_the_replaced_database_and_the_next_restore_keeps_it(
        victim, stack_file, stack_config, pg_tls, kill, caplog):
    """Killed in its gate, the restore leaves the restored copy live and the database it replaced as
    `victim__before_<stamp>`; killed between its renames, no `victim` at all. Either way that copy may be the only
    one of production: the next restore (keep_previous_h 0) must keep it and say so, not sweep it as stale."""
    from prefect.settings import PREFECT_API_URL

    from flows.restore import restore

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    code = (f"import os; {KILLS[kill]}\nfrom flows.restore import restore; restore(stack_file={stack_file!r}, "
            "database='odoo_core', target_database='victim', overwrite=True, restore_filestore=False)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    (before,) = databases(pg_tls, "victim\\_\\_before\\_%")
    assert bool(databases(pg_tls, "victim")) == (kill == "in-its-gate")

    def holds_the_row(name: str) -> bool:
        pg_tls.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        try:
            return pg_tls.execute("SELECT x FROM only_in_victim", name) == [(42,)]
        finally:
            pg_tls.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')

    assert holds_the_row(before)
    free_killed_writers(stack_config.name)  # the killed run's slot (the test above waits its lease out once)
    # a killed client's backends end a moment after it (seen lingering on a loaded machine): until then its copy
    # counts as in use, and the sweep rightly keeps it
    wait_until(lambda: not pg_tls.execute("SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'victim\\_\\_%'"),
               30, "the killed restore's sessions to end")
    try:
        out = restore(stack_file=stack_file, database="odoo_core", target_database=victim, overwrite=True,
                      restore_filestore=False)
        # the new restore's own replaced copy (if any) went after its gate; the killed one's is kept, and said
        assert "dropped after the gate passed" in out["replaced_copy"] or out["replaced_copy"].startswith("none")
        assert databases(pg_tls, "victim\\_\\_%") == [before]
        assert holds_the_row(before)
        assert any(before in r.getMessage() and "before its health gate passed" in r.getMessage()
                   for r in caplog.records)
    finally:
        free_killed_writers(stack_config.name)
        pg_tls.dropdb(before)


def proxied_restore(stack_tree, proxy, tmp_path, stderr=subprocess.PIPE):
    """A restore of odoo_core over `victim` in a process of its own, reaching S3 through `proxy`."""
    from tests.faults import run_flow

    proxied = write({**stack_tree, "spaces": {**stack_tree["spaces"], "endpoint": proxy.endpoint}},
                    tmp_path / "proxied.yaml")
    return run_flow("from flows.restore import restore; restore(stack_file={stack_file}, database='odoo_core', "
                    "target_database='victim', overwrite=True)", proxied, stderr=stderr)


def filestore_dirs(cfg, prefix: str) -> list[str]:
    """The odoo-core container's filestore directories whose names start with `prefix`."""
    from odoo_stack_ops.connect import Connections

    with Connections(cfg) as conns:
        return rs.filestore_dirs(conns.container("odoo-core"), cfg.odoo.data_dir, prefix)


def test_a_production_restore_whose_gate_fails_restarts_odoo_on_the_previous_database_and_the_next_sweeps_it(
        prefect_harness, stack_file, stack_config, pg_tls, stack_containers, docker_client, monkeypatch):
    """The gate restarts odoo-core on the restored database; when /web/health then fails, the previous database is
    swapped back, and odoo-core (which loaded the restored one) must be restarted on it (it was left running).
    The restored database and filestore are set aside as `odoo_core__failed_<stamp>`; the next restore drops
    both (the filestore used to be `odoo_core.failed` and the database kept, swept by nothing)."""
    from flows.backup import backup
    from flows.restore import restore
    from odoo_stack_ops.connect import Connections
    from odoo_stack_ops.upgrade import steps

    def started_at() -> str:
        return docker_client.containers.get(stack_containers["odoo-core"]["container"]).attrs["State"]["StartedAt"]

    real, starts = steps.wait_healthy, []

    def unhealthy_once(url, timeout_s):
        starts.append(started_at())
        if len(starts) == 1:
            raise VerificationFailed(f"{url} did not answer 200 within {timeout_s:.0f} s")
        return real(url, timeout_s)

    backup(stack_file=stack_file)
    pg_tls.execute("CREATE TABLE only_live (x int)", "odoo_core")
    monkeypatch.setattr(steps, "wait_healthy", unhealthy_once)
    try:
        with pytest.raises(OpsError, match="failed its gate") as err:
            restore(stack_file=stack_file, database="odoo_core", target_database="odoo_core", overwrite=True)
        assert "odoo-core restarted on it, healthy" in str(err.value)
        assert len(starts) == 2 and starts[1] != starts[0]  # a real restart after the swap back
        assert pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'only_live'", "odoo_core") == [(1,)]
        (failed,) = databases(pg_tls, "odoo\\_core\\_\\_failed\\_%")
        assert failed in str(err.value)
        assert filestore_dirs(stack_config, "odoo_core") == ["odoo_core", failed]
        with Connections(stack_config) as conns:  # where versions before 2026-12-02 set a failed filestore aside
            conns.container("odoo-core").run(["mkdir", "-p", f"{stack_config.odoo.data_dir}/filestore/odoo_core.failed"])

        out = restore(stack_file=stack_file, database="odoo_core", target_database="odoo_core", overwrite=True)
        assert "healthy" in out["gate"]
        assert databases(pg_tls, "odoo\\_core\\_\\_%") == []
        assert filestore_dirs(stack_config, "odoo_core") == ["odoo_core"]
    finally:
        pg_tls.execute("DROP TABLE IF EXISTS only_live", "odoo_core")
        for name in databases(pg_tls, "odoo\\_core\\_\\_failed\\_%"):
            pg_tls.dropdb(name)


HANGS_IN_ITS_FIRST_HEALTH_WAIT = """
import pathlib, time
from odoo_stack_ops.upgrade import steps
real, calls = steps.wait_healthy, []
def hang_first(url, timeout_s):
    calls.append(url)
    if len(calls) == 1:
        pathlib.Path({marker!r}).touch()
        time.sleep(600)
    return real(url, timeout_s)
steps.wait_healthy = hang_first
from flows.restore import restore
restore(stack_file={stack_file!r}, database='odoo_core', target_database='odoo_core', overwrite=True)
"""


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_a_production_restore_cancelled_in_its_gate_puts_the_previous_database_back_and_restarts_odoo(
        prefect_harness, stack_tree, stack_file, stack_config, pg_tls, stack_containers, docker_client, tmp_path,
        encrypted):
    """A cancel (SIGTERM, what the worker sends first) while odoo-core starts on the restored database: the gate's
    guard was `except Exception`, so the restored copy stayed live, unconfirmed, with production's previous
    database aside as `odoo_core__before_<stamp>`. The cancelled run swaps back and restarts odoo-core on it."""
    from prefect.settings import PREFECT_API_URL

    from flows.backup import backup

    if encrypted:
        identity = pyrage.x25519.Identity.generate()
        stack_tree = {**stack_tree, "backup": {**stack_tree["backup"], "age_recipients": [str(identity.to_public())],
                                               "age_identity": str(identity)}}
        stack_file = write(stack_tree, tmp_path / "encrypted.yaml")
    backup(stack_file=stack_file)
    assert published(stack_config)[-1].encryption.enabled == encrypted
    pg_tls.execute("CREATE TABLE only_live (x int)", "odoo_core")
    marker = tmp_path / "in-the-gate"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGS_IN_ITS_FIRST_HEALTH_WAIT.format(marker=str(marker), stack_file=stack_file)],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    odoo = docker_client.containers.get(stack_containers["odoo-core"]["container"])
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the restore never reached its gate"
            time.sleep(0.3)
        odoo.reload()
        started_on_the_restored = odoo.attrs["State"]["StartedAt"]
        assert databases(pg_tls, "odoo\\_core\\_\\_before\\_%")  # the restored copy is live, unconfirmed
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == -signal.SIGTERM, err[-3000:]
        assert "cancelled in its gate" in err and "odoo-core restarted on it, healthy" in err, err[-3000:]
        assert pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'only_live'", "odoo_core") == [(1,)]
        assert databases(pg_tls, "odoo\\_core\\_\\_before\\_%") == []
        (failed,) = databases(pg_tls, "odoo\\_core\\_\\_failed\\_%")
        assert filestore_dirs(stack_config, "odoo_core") == ["odoo_core", failed]
        odoo.reload()
        assert odoo.attrs["State"]["StartedAt"] != started_on_the_restored  # restarted on the database put back
        assert requests.get(stack_tree["odoo"]["health_url"], timeout=5).status_code == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        free_killed_writers(stack_config.name)
        pg_tls.execute("DROP TABLE IF EXISTS only_live", "odoo_core")
        from odoo_stack_ops.connect import Connections

        with Connections(stack_config) as conns:
            for name in filestore_dirs(stack_config, "odoo_core__"):
                rs.drop_filestore(conns.container("odoo-core"), stack_config.odoo.data_dir, name)
        for name in databases(pg_tls, "odoo\\_core\\_\\_%"):
            pg_tls.dropdb(name)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_worker_killed_while_a_restore_unpacks_the_filestore_before_its_database_exists_leaves_nothing(
        victim, stack_tree, stack_file, stack_config, pg_tls, s3, tmp_path, encrypted):
    """The filestore leg unpacks from the start while the dump downloads: a kill in that window leaves a copy
    directory and no copy database. The next restore drops it (stale copies were found by database alone). With
    encryption on, the night restored is an encrypted one (each blob decrypted as it unpacks)."""

    from flows.backup import backup
    from flows.restore import restore
    from tests.faults import S3FaultProxy

    if encrypted:
        identity = pyrage.x25519.Identity.generate()
        stack_tree = {**stack_tree, "backup": {**stack_tree["backup"], "age_recipients": [str(identity.to_public())],
                                               "age_identity": str(identity)}}
        stack_file = write(stack_tree, tmp_path / "encrypted.yaml")
        backup(stack_file=stack_file)  # the latest night, the one both restores below take, is encrypted
        assert published(stack_config)[-1].encryption.enabled
    proxy = S3FaultProxy(s3.endpoint)
    held = proxy.hold(lambda m, p: m == "GET" and "/db/" in p)  # the dump's download waits; the filestore's does not
    proc = proxied_restore(stack_tree, proxy, tmp_path, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: proc.poll() is None and held.reached.is_set()
                   and filestore_dirs(stack_config, "victim__restoring_"), 120,
                   "the filestore unpacking while the dump waits")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proxy.stop()
    left = filestore_dirs(stack_config, "victim__restoring_")
    assert left and databases(pg_tls, "victim\\_\\_%") == []  # the window: a directory, no database
    assert pg_tls.execute("SELECT x FROM only_in_victim", victim) == [(42,)]
    free_killed_writers(stack_config.name)  # the killed run's slot (a test above waits its lease out once)
    try:
        out = restore(stack_file=stack_file, database="odoo_core", target_database=victim, overwrite=True)
        assert out["replaced_copy"].endswith("(dropped after the gate passed)")
        assert filestore_dirs(stack_config, "victim__") == []  # the killed restore's directory went too
        assert databases(pg_tls, "victim\\_\\_%") == []
        assert filestore_dirs(stack_config, "victim") == ["victim"]
    finally:
        free_killed_writers(stack_config.name)
        from odoo_stack_ops.connect import Connections

        with Connections(stack_config) as conns:
            for name in filestore_dirs(stack_config, "victim"):
                rs.drop_filestore(conns.container("odoo-core"), stack_config.odoo.data_dir, name)


def test_a_restore_cancelled_while_a_pack_download_hangs_ends_in_seconds_and_the_live_database_stays(
        victim, stack_tree, stack_config, pg_tls, s3, tmp_path):
    """A cancel (SIGTERM) while a pack's download (the filestore leg's fetches, on threads beside the database's
    restore) hangs on a dead connection: the run ends well within Prefect's 30 s grace, so its guards run rather
    than a SIGKILL, and `victim` is untouched. (The dump's download is in the main thread, which the signal
    interrupts: that case never hung.)"""
    from tests.faults import S3FaultProxy, cancel_while_held, stop_run

    proxy = S3FaultProxy(s3.endpoint)
    held = proxy.hold(lambda m, p: m == "GET" and "/packs/" in p)
    proc = proxied_restore(stack_tree, proxy, tmp_path)
    try:
        cancel_while_held(proc, held, "the pack's download")
    finally:
        stop_run(proc, held, proxy)
        free_killed_writers(stack_config.name)
    assert pg_tls.execute("SELECT x FROM only_in_victim", victim) == [(42,)]
    assert databases(pg_tls, "victim\\_\\_%") == []


def test_nightly_and_pre_upgrade_backup_at_once_one_waits_and_both_are_whole(
        prefect_harness, stack_tree, stack_file, addons, pg_tls, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    nightly = f"from flows.backup import backup; backup(stack_file={stack_file!r})"
    upgrade = ("from flows.module_upgrade import UpgradeRequest, module_upgrade; "
               f"module_upgrade(UpgradeRequest(install=['ipai_new']), stack_file={stack_file!r})")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for code in (nightly, upgrade)]
    try:
        errors = [p.communicate(timeout=600)[1].decode(errors="replace")[-2000:] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
    finally:
        pg_tls.execute("DELETE FROM ir_module_module WHERE name = 'ipai_new'", "odoo_core")
    cfg = validate_tree(stack_tree)
    first, second = sorted(published(cfg), key=lambda m: m.started_at)
    assert second.started_at >= first.finished_at  # they did not overlap: one waited for the other
    assert first.verified and second.verified, (first.verification, second.verification)
    s3 = spaces.client(cfg.spaces)
    bucket = spaces.Bucket.open(cfg.spaces)
    for m in (first, second):  # nothing of either was deleted, and each restores
        assert b"".join(rs.dump_chunks(bucket, m.dump))
        for f in rs.filestore_files(bucket, m):
            s3.head_object(Bucket=cfg.spaces.bucket, Key=f.location(cfg.spaces.prefix, m.object_tag)[0])


def test_staging_refresh_whose_filestore_restore_fails_leaves_no_live_copy(
        prefect_harness, stack_file, stack_config, pg_tls):
    from flows.backup import backup
    from flows.restore import restore

    backup(stack_file=stack_file)
    (m,) = published(stack_config)
    bucket = spaces.Bucket.open(stack_config.spaces)
    victim = next(f for f in reversed(rs.filestore_files(bucket, m)) if f.length > 0)
    key, offset, _length = victim.location(bucket.prefix, m.object_tag)
    pack = bytearray(bucket.get_bytes(key))
    pack[offset] ^= 0x01  # one byte of one file's blob, inside a pack other files share
    bucket.put_bytes(key, bytes(pack))
    dev_before = pg_tls.execute("SELECT count(*) FROM pg_class", "odoo_dev")
    with pytest.raises(VerificationFailed, match=r"corrupt|hash"):
        restore(stack_file=stack_file, database="odoo_core", staging=True)
    assert databases(pg_tls, "odoo\\_dev\\_\\_%") == []  # the copy (neutralized first anyway) is gone
    assert pg_tls.execute("SELECT count(*) FROM pg_class", "odoo_dev") == dev_before  # odoo_dev untouched
    for db in databases(pg_tls, "%"):
        if db in ("odoo_core", "template0", "template1", "postgres") or db.startswith("verify_"):
            continue
        if pg_tls.execute("SELECT count(*) FROM pg_class WHERE relname = 'ir_mail_server'", db)[0][0]:
            assert pg_tls.execute("SELECT count(*) FROM ir_mail_server WHERE active", db) == [(0,)], db


def test_restore_whose_dump_fails_while_the_filestore_unpacks_leaves_no_copy(
        prefect_harness, stack_file, stack_config, pg_tls, docker_executor):
    """The filestore leg runs beside the database leg: when the dump turns out altered (known only once it is
    all downloaded), the restore fails and neither the database copy nor the unpacked directory is left."""
    from flows.backup import backup
    from flows.restore import restore

    backup(stack_file=stack_file)
    (m,) = published(stack_config)
    bucket = spaces.Bucket.open(stack_config.spaces)
    blob = bytearray(bucket.get_bytes(m.dump.key))
    blob[len(blob) // 2] ^= 0x01
    bucket.put_bytes(m.dump.key, bytes(blob))
    with pytest.raises(VerificationFailed, match="does not match"):
        restore(stack_file=stack_file, database="odoo_core", target_database="half_way")
    assert databases(pg_tls, "half\\_way%") == []
    left = docker_executor.run(["sh", "-c", "ls -d /var/lib/odoo/filestore/half_way* 2>/dev/null; true"]).stdout_text
    assert left.strip() == ""


def test_staging_refresh_falls_back_to_the_sql_rules_without_odoo_neutralize(
        prefect_harness, stack_file, addons, pg_tls, docker_executor, caplog):
    from flows.backup import backup
    from flows.restore import restore

    backup(stack_file=stack_file)
    addons.exec_run(["sh", "-c", "mkdir -p /var/lib/odoo/.standin && echo no-neutralize > /var/lib/odoo/.standin/mode"])
    try:
        restore(stack_file=stack_file, database="odoo_core", staging=True)
    finally:
        addons.exec_run(["rm", "-f", "/var/lib/odoo/.standin/mode"])
    assert any("SQL rules" in r.getMessage() for r in caplog.records)
    assert pg_tls.execute("SELECT count(*) FROM ir_mail_server WHERE active", "odoo_dev") == [(0,)]
    assert pg_tls.execute("SELECT count(*) FROM ir_cron WHERE active", "odoo_dev") == [(1,)]  # autovacuum only
    assert pg_tls.execute("SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'",
                          "odoo_dev") == [("True",)]
    docker_executor.run(["rm", "-rf", "/var/lib/odoo/filestore/odoo_dev"])


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_nightly_killed_after_its_dump_leaves_no_plaintext_copy_past_the_next_night(
        prefect_harness, stack_tree, stack_file, stack_config, s3, tmp_path, monkeypatch, encrypted):
    """A night keeps a compressed plaintext copy of its dump on the worker for verification (with encryption on
    too: that is how verification needs no private key). Killed before it deletes it, the copy stayed forever;
    the next night on the worker removes it, and leaves no copy of its own."""
    import tempfile

    from prefect.settings import PREFECT_API_URL

    from flows.backup import backup
    from tests.faults import S3FaultProxy

    if encrypted:
        identity = pyrage.x25519.Identity.generate()
        stack_tree = {**stack_tree, "backup": {**stack_tree["backup"], "age_recipients": [str(identity.to_public())]}}
        stack_file = write(stack_tree, tmp_path / "encrypted.yaml")
    spool = tmp_path / "tmp"  # this test's own temporary folder: others' runs do not mix in
    spool.mkdir()
    proxy = S3FaultProxy(s3.endpoint)
    held = proxy.hold(lambda m, p: m == "PUT" and "/filestore/" in p)  # the filestore manifest: after the dump
    proxied = write({**stack_tree, "spaces": {**stack_tree["spaces"], "endpoint": proxy.endpoint}},
                    tmp_path / "proxied.yaml")
    env = {**os.environ, "TMPDIR": str(spool), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", f"from flows.backup import backup; backup(stack_file={proxied!r})"],
                            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: proc.poll() is None and held.reached.is_set(), 120, "the night past its dump")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proxy.stop()
    (killed,) = spool.glob("odoo-dump-*")
    (copy,) = killed.glob("*.dump.zst")
    assert copy.stat().st_size > 0
    free_killed_writers(stack_config.name)  # what the server's lease repossessor does for the killed night
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    backup(stack_file=stack_file)
    assert not killed.exists()
    assert list(spool.iterdir()) == []
