"""State every worker sees: the named state under a row lock in PostgreSQL (no lost update between workers, a
second holder waits then times out), the file fallback with one worker, and health sweeps of one stack
alternating between two workers (their own state dirs) raising one alert and one resolved."""

from __future__ import annotations

import json
import threading

import pytest

from odoo_stack_ops import shared_state
from odoo_stack_ops.config import validate_tree
from tests.test_health_sweep import lone_web, mm, posts, write_stack  # noqa: F401 - fixtures used below

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ops_db(pg):
    pg.createdb("shared_state")
    info = pg.conninfo("shared_state")
    return (f"postgresql://{info['user']}:{info['password']}@{info['host']}:{info['port']}/{info['dbname']}"
            "?sslmode=disable")


def cfg_for(tmp_path, worker: str, dsn: str | None, name: str = "shared"):
    tree = {"name": name, "database": {"host": "127.0.0.1", "sslrootcert": "/etc/ssl/do-ca.crt"},
            "docker": {"mode": "local", "base_url": "unix:///run/none.sock"},
            "spaces": {"bucket": "unused"}, "state_dir": str(tmp_path / worker)}
    if dsn:
        tree["supabase"] = {"db_dsn": dsn}
    return validate_tree(tree)


def count_to(cfg, name: str, n: int) -> None:
    for _ in range(n):
        with shared_state.held(cfg, name) as slot:
            value = json.loads(slot.text or "0")
            slot.save(json.dumps(value + 1))


@pytest.mark.parametrize("shared", [True, False], ids=["postgresql", "file"])
def test_read_modify_write_is_never_lost_between_two_holders(ops_db, tmp_path, shared):
    """Two threads (as two runs) increment the same state 25 times each: 50, not less."""
    cfgs = [cfg_for(tmp_path, "w", ops_db if shared else None, name=f"count-{tmp_path.name[-10:]}") for _ in "ab"]
    threads = [threading.Thread(target=count_to, args=(c, "counter", 25)) for c in cfgs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with shared_state.held(cfgs[0], "counter") as slot:
        assert json.loads(slot.text) == 50


def test_a_second_holder_waits_then_times_out_and_nothing_is_saved_on_error(ops_db, tmp_path):
    a, b = cfg_for(tmp_path, "a", ops_db), cfg_for(tmp_path, "b", ops_db)
    with shared_state.held(a, "busy") as slot:
        slot.save('"first"')
        with (pytest.raises(TimeoutError, match="another run holds the shared state 'busy' of shared"),
              shared_state.held(b, "busy", timeout_s=0.3)):
            pass
    with pytest.raises(RuntimeError), shared_state.held(b, "busy") as slot:
        slot.save('"never"')
        raise RuntimeError("the sweep failed half way")
    with shared_state.held(b, "busy") as slot:
        assert json.loads(slot.text) == "first"


def test_state_of_a_single_worker_install_is_carried_into_the_shared_table(ops_db, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "health-state.json").write_text('{"version": 1, "checks": {}, "samples": {"x": 1}}')
    cfg = cfg_for(tmp_path, "old", ops_db, name=f"carried-{tmp_path.name[-10:]}")
    with shared_state.held(cfg, "health-state") as slot:
        assert json.loads(slot.text)["samples"] == {"x": 1}
    assert "every worker" in shared_state.where(cfg)
    assert "this worker only" in shared_state.where(cfg_for(tmp_path, "old", None))


def test_sweeps_alternating_between_two_workers_raise_one_alert_and_one_resolved(
        prefect_harness, stack_tree, stack_containers, lone_web, mm, ops_db, tmp_path):  # noqa: F811
    """Worker A and worker B (own state dirs) take turns: the failures count across both (alert on the 2nd
    sweep, whoever runs it), and the recovery resolves once. With per-worker state each would alert alone."""
    from flows.health import health_sweep

    project, container = lone_web
    over = {"name": f"two-workers-{tmp_path.name[-8:]}", "supabase": {"db_dsn": ops_db}}
    files = []
    for worker in ("a", "b"):
        (tmp_path / worker).mkdir()
        files.append(write_stack(stack_tree, tmp_path / worker, project=project, mm=mm,
                                 containers={"web": {"service": "web", "image": "busybox"}}, **over))
    endpoints = {"odoo-core": stack_containers["odoo-core"]["health_url"]}
    turn = iter(files * 4)
    sweep = lambda: health_sweep(stack_file=next(turn), endpoints=endpoints, fail_after=2, ok_after=2)  # noqa: E731
    container.stop(timeout=1)
    web = lambda: [p for post in posts(mm) for p in post if "container.web" in p[0]]  # noqa: E731 - this check's
    sweep(), sweep(), sweep()  # A fails, B fails → alert, A still failing: quiet
    assert len(web()) == 1
    container.start()
    sweep(), sweep()  # B ok, A ok → resolved
    name = over["name"]
    assert web() == [(f"ALERT: container.web on {name}", "#a30200"), (f"RESOLVED: container.web on {name}", "#2eb886")]
    assert not (tmp_path / "a" / "state" / "health-state.json").exists()  # nothing kept per worker
